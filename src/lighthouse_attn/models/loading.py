"""Loading trained models for evaluation, export and generation (no training code needed).

A model directory is a run's ``final/``, a checkpoint ``checkpoints/step_NNNNNNN/`` (the format
is described in :mod:`lighthouse_attn.train.checkpoint`, which writes it), or the ordinary
Hugging Face checkpoint that is the final model of a ``--hf-config`` run. Every file of a
lighthouse-attn directory is checked against its manifest before use.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..data import TOKENIZER, Tokenizer, tokenizer_from_identity
from .build import ModelConfig, model_config_from_dict, model_from_config

FORMAT = "lighthouse-attn/1"
"""The ``format`` of a lighthouse-attn checkpoint's ``config.json``."""
_STEP_DIR = re.compile(r"^step_(\d+)$")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the run's checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} is a file, not the run's checkpoint directory; move it away")
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    files = [p for _, p in found if not p.is_dir()]
    if files:
        raise ValueError(f"{files[0]} is a file, not a checkpoint directory; move it away (a "
                         "checkpoint is a directory written by the trainer)")
    return sorted(found)


def verify(path: Path) -> None:
    """Check every file of a checkpoint directory against its manifest; ``ValueError`` if one
    is missing, truncated or modified."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"{path} is not a complete checkpoint (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"checkpoint {path} is corrupt: manifest.json is not valid JSON"
                         ) from None
    if not isinstance(manifest, dict) or not {"config.json", "model.safetensors"} <= set(
            manifest) or not all(isinstance(w, dict) and {"bytes", "sha256"} <= set(w)
                                 for w in manifest.values()):
        raise ValueError(f"checkpoint {path} is corrupt: manifest.json does not list its files "
                         "with sizes and checksums (at least config.json and "
                         "model.safetensors); use an earlier checkpoint")
    for name, want in manifest.items():
        f = path / name
        if not f.is_file():
            raise ValueError(f"checkpoint {path} is incomplete: {name} is missing")
        if f.stat().st_size != want["bytes"] or sha256_file(f) != want["sha256"]:
            raise ValueError(f"checkpoint {path} is corrupt: {name} does not match its "
                             "checksum (truncated or modified); use an earlier checkpoint")


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is corrupt: expected a JSON object, found "
                         f"{type(data).__name__}")
    return data


def read_model_config(path: Path) -> tuple[ModelConfig, dict]:
    """The model config and the raw ``config.json`` of a checkpoint directory."""
    meta = read_json(path / "config.json")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a lighthouse-attn checkpoint (format "
                         f"{meta.get('format')!r}, expected {FORMAT!r})")
    try:
        return model_config_from_dict(meta["model"]), meta
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {path} has an invalid model config: {err}") from None


def read_weights(path: Path, model_config: ModelConfig) -> dict:
    """The verified weights of a checkpoint directory, checked against ``model_config``
    (same keys and shapes as a fresh model)."""
    try:
        state = load_file(path / "model.safetensors")
    except (SafetensorError, OSError) as err:
        raise ValueError(f"checkpoint {path} is corrupt: model.safetensors: {err}") from None
    with torch.device("meta"):
        expected = {k: tuple(v.shape)
                    for k, v in model_from_config(model_config).state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {expected[k]}" for k in sorted(expected)
              if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or shapes:
        raise ValueError(f"checkpoint {path} does not match the model config: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}, shape mismatches "
                         f"{shapes[:5]}")
    return state


def resolve_model_dir(path: str | Path) -> Path:
    """The directory :func:`load_model` reads: a run's ``final/``, else its newest checkpoint,
    else ``path`` itself when it is a checkpoint directory."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory; pass a run directory or a checkpoint "
                         "directory")
    if (path / "final" / "config.json").is_file():
        return path / "final"
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    ckpts = list_checkpoints(path)
    if ckpts:
        return ckpts[-1][1]
    raise ValueError(f"{path} holds no model: neither final/, nor checkpoints/step_*, nor "
                     "config.json + model.safetensors")


def is_hf_checkpoint(path: str | Path) -> bool:
    """True when ``path`` holds an ordinary Hugging Face checkpoint (the final model of a
    ``--hf-config`` run) rather than a lighthouse-attn one."""
    config = Path(path) / "config.json"
    if not config.is_file() or (Path(path) / "manifest.json").exists():
        return False
    try:
        meta = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(meta, dict) and "model_type" in meta and "format" not in meta


def how_to_load(final_dir: str | Path) -> str:
    """How to load a run's final model, for the summary."""
    if is_hf_checkpoint(final_dir):
        return ("an ordinary Hugging Face checkpoint: `AutoModelForCausalLM.from_pretrained"
                "(path, attn_implementation=\"sdpa\")`, or `lighthouse_attn.models.load_model`")
    return "load with `lighthouse_attn.models.load_model`"


def load_model(path: str | Path, attention: str = "dense") -> tuple[torch.nn.Module, dict]:
    """Load a trained model for evaluation.

    Args:
        path: a run directory (its final dense model if present, else its latest checkpoint)
            or a checkpoint directory.
        attention: ``"dense"`` or ``"lighthouse"``: the mode the model is set to.

    Returns:
        ``(model, info)``: the model (a :class:`~lighthouse_attn.models.Llama`, or for a
        ``--hf-config`` run a :class:`~lighthouse_attn.models.HFCausalLM`; both take int64
        ``(B, N)`` token ids and return fp32 logits) on the CPU in eval mode, and ``info`` with
        ``path``, ``kind`` (``"final"`` or ``"checkpoint"``), ``step`` (``None`` for the HF
        checkpoint of a ``--hf-config`` run's final model), ``trained_attention`` (the mode at
        save time), ``attention``, ``model_config`` (dict) and ``tokenizer`` (the identity it
        records; :func:`model_tokenizer` reads the tokenizer itself).

    Raises:
        ValueError: no model there, or a corrupt or mismatched checkpoint.
    """
    model_dir = resolve_model_dir(path)
    if is_hf_checkpoint(model_dir):
        from .hf_causal_lm import load_dense_checkpoint

        model = load_dense_checkpoint(model_dir)
        config, meta = model.config, {"step": None, "attention": "dense",
                                      "tokenizer": model_tokenizer(model_dir).identity()}
    else:
        verify(model_dir)
        config, meta = read_model_config(model_dir)
        model = model_from_config(config)
        model.load_state_dict(read_weights(model_dir, config), strict=True)
    model.set_attention(attention)
    model.eval()
    info = {"path": str(model_dir), "kind": "final" if model_dir.name == "final" else
            "checkpoint", "step": meta.get("step"), "trained_attention": meta.get("attention"),
            "attention": attention, "model_config": config.to_dict(),
            "tokenizer": meta.get("tokenizer") or TOKENIZER.identity()}
    return model, info


def model_tokenizer(model_dir: str | Path) -> Tokenizer:
    """The tokenizer a model directory was trained with (:func:`resolve_model_dir`'s answer):
    the one its ``config.json`` records, or, for an HF checkpoint, the one saved beside it."""
    model_dir = Path(model_dir)
    if is_hf_checkpoint(model_dir):
        from .hf_causal_lm import saved_tokenizer

        return saved_tokenizer(model_dir)
    return tokenizer_from_identity(read_json(model_dir / "config.json").get("tokenizer"),
                                   model_dir)
