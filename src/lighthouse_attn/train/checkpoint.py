"""Checkpoints: atomic writes, verified reads, and :func:`load_model` for downstream tools.

A run directory holds ``checkpoints/step_NNNNNNN/`` (the newest few) and, once finished,
``final/`` (the dense model). A checkpoint directory holds::

    config.json        {"format", "model": model config dict, "attention", "step", "tokenizer"}
    tokenizer.json     the run's tokenizer file, unchanged (runs with a tokenizer file only)
    model.safetensors  weights (the keys of the dense model, in every stage)
    optimizer.pt       AdamW state keyed by parameter name (checkpoints only)
    trainer.json       step, stage, data position, elapsed time (checkpoints only)
    rng.pt             RNG states (checkpoints only)
    manifest.json      size and SHA-256 of every file above

A directory is written under a temporary name and renamed into place, so a crash never
leaves a half-written checkpoint under a real name; the manifest catches later damage.

The final model of a Llama run is such a directory (no optimizer, trainer or RNG state); that of
a ``--hf-config`` run is an ordinary Hugging Face checkpoint (``config.json``,
``model.safetensors``, ``generation_config.json``; the HF model's keys), written atomically by
:func:`lighthouse_attn.hf.save_pretrained`. Checkpoints of either kind of run use the format
above, with the model's own state-dict keys.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..data import TOKENIZER, Tokenizer, tokenizer_from_identity
from ..data.tokenizer import check_same_tokenizer
from ..models import ModelConfig, model_config_from_dict, model_from_config
from ..models.interface import HF_FORMAT, OUR_FORMAT

FORMAT = "lighthouse-attn/1"
_STEP_DIR = re.compile(r"^step_(\d+)$")


# --------------------------------------------------------------------------- writing
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(tmp: Path, final: Path) -> None:
    """Add the manifest, flush, and rename ``tmp`` to ``final`` (replacing an old one)."""
    manifest = {}
    mode = 0o666 & ~_umask()
    for f in sorted(tmp.iterdir()):
        os.chmod(f, mode)  # safetensors writes 0600; every file of a run is readable alike
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
        manifest[f.name] = {"bytes": f.stat().st_size, "sha256": _sha256(f)}
    _write_json(tmp / "manifest.json", manifest)
    _fsync_dir(tmp)
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_dir(final: Path) -> Path:
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _write_model_meta(tmp: Path, model_config: ModelConfig, attention: str, step: int,
                      tokenizer: Tokenizer) -> None:
    """``config.json`` and the tokenizer's files of a checkpoint directory."""
    _write_json(tmp / "config.json", {"format": FORMAT, "model": model_config.to_dict(),
                                      "attention": attention, "step": step,
                                      "tokenizer": tokenizer.identity()})
    for name, data in tokenizer.files().items():
        (tmp / name).write_bytes(data)


def _unshared(state: dict) -> dict:
    """Contiguous tensors, a copy of any that shares memory with an earlier one (tied
    embeddings appear under two keys; safetensors refuses shared memory)."""
    out, seen = {}, set()
    for k, v in state.items():
        v = v.contiguous()
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def save_checkpoint(run_dir: str | Path, step: int, model_state: dict, optimizer_state: dict,
                    trainer_state: dict, rng_state: dict, model_config: ModelConfig,
                    attention: str, tokenizer: Tokenizer = TOKENIZER) -> Path:
    """Write ``run_dir/checkpoints/step_<step>/`` atomically; returns its path."""
    final = Path(run_dir) / "checkpoints" / f"step_{step:07d}"
    tmp = _tmp_dir(final)
    with _writing(tmp, final):
        save_file(_unshared(model_state), tmp / "model.safetensors")
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(rng_state, tmp / "rng.pt")
        _write_json(tmp / "trainer.json", dict(trainer_state, step=step))
        _write_model_meta(tmp, model_config, attention, step, tokenizer)
        _commit(tmp, final)
    return final


@contextlib.contextmanager
def _writing(tmp: Path, final: Path):
    """A failed write (a full disk, a read-only directory) removes the half-written
    temporary and raises ``OSError`` naming ``final`` and the cause."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as err:  # torch.save: RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            reason = err.strerror or str(err)
        else:
            reason = f"{str(err).splitlines()[0]} (is the disk full?)"
        raise OSError(getattr(err, "errno", None) or errno.EIO,
                      f"cannot write {final.name}: {reason}; earlier checkpoints are intact",
                      str(final)) from None


def save_final_model(run_dir: str | Path, model_state: dict, model_config: ModelConfig,
                     step: int, tokenizer: Tokenizer = TOKENIZER) -> Path:
    """Write the finished dense model to ``run_dir/final/`` atomically; returns its path. An HF
    architecture is saved as an ordinary HF checkpoint (see the module docstring)."""
    final = Path(run_dir) / "final"
    return _FINAL_WRITERS[model_config.checkpoint_format](model_state, model_config, final,
                                                          step, tokenizer)


def _save_final_ours(model_state: dict, model_config: ModelConfig, final: Path,
                     step: int, tokenizer: Tokenizer) -> Path:
    tmp = _tmp_dir(final)
    with _writing(tmp, final):
        save_file({k: v.contiguous() for k, v in model_state.items()},
                  tmp / "model.safetensors")
        _write_model_meta(tmp, model_config, "dense", step, tokenizer)
        _commit(tmp, final)
    return final


def _save_final_hf(model_state: dict, model_config: ModelConfig, final: Path,
                   step: int, tokenizer: Tokenizer) -> Path:
    from ..models.hf_causal_lm import save_dense_checkpoint

    return save_dense_checkpoint(model_state, model_config, final, tokenizer)


_FINAL_WRITERS = {OUR_FORMAT: _save_final_ours, HF_FORMAT: _save_final_hf}


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


def prune_checkpoints(run_dir: str | Path, keep: int, protect: set[int] = frozenset()) -> None:
    """Delete all but the newest ``keep`` checkpoints (steps in ``protect`` stay)."""
    ckpts = list_checkpoints(run_dir)
    for step, path in ckpts[:max(0, len(ckpts) - keep)]:
        if step not in protect:
            shutil.rmtree(path)


# --------------------------------------------------------------------------- reading
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
        if f.stat().st_size != want["bytes"] or _sha256(f) != want["sha256"]:
            raise ValueError(f"checkpoint {path} is corrupt: {name} does not match its "
                             "checksum (truncated or modified); use an earlier checkpoint")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is corrupt: expected a JSON object, found "
                         f"{type(data).__name__}")
    return data


RUN_FILES = ("checkpoints", "final", "config.json", "metrics.jsonl", "train.log", "loss.png",
             "summary.md", "tensorboard")
"""What a run writes into its directory (a fresh start with --overwrite removes them)."""


def check_fresh_run_dir(run_dir: str | Path, overwrite: bool) -> None:
    """A fresh start may write into ``run_dir`` only when it is missing or empty (its lock
    aside), or with ``overwrite`` (which replaces the entries of :data:`RUN_FILES` and keeps
    anything else). ``ValueError`` names what is there and how to go on: a directory whose
    ``config.json`` is gone but whose checkpoints remain says how to recover it."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} is a file, not a directory; choose another "
                         "--run-dir")
    if not run_dir.is_dir():
        return
    held = sorted(p.name for p in run_dir.iterdir() if p.name != ".lock")
    if overwrite or not held:
        return
    ckpts = list_checkpoints(run_dir)
    if ckpts and not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir} holds checkpoints ({', '.join(p.name for _, p in ckpts)}) "
                         "but no config.json: the run's settings are lost. To resume, write "
                         "config.json again with the settings it was started with and run "
                         f"--resume {run_dir}; to export its model, run lighthouse-attn export "
                         f"{ckpts[-1][1]} OUT; to start over and delete them, pass --overwrite")
    if (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, "
                         "or pass --overwrite to replace it, or choose another --run-dir")
    shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
    raise ValueError(f"{run_dir} is not empty ({shown}); a fresh run needs a new or empty "
                     "directory: choose another --run-dir, or pass --overwrite to replace "
                     f"{', '.join(n for n in RUN_FILES if n in held) or 'nothing'} "
                     "(other files stay)")


def clear_run_files(run_dir: str | Path) -> None:
    """Remove an earlier run's files from ``run_dir`` (call while holding its lock)."""
    for name in RUN_FILES:
        target = Path(run_dir) / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def check_trainer_state(state: dict, path: Path) -> dict:
    """The trainer state of a checkpoint, with the entries resuming needs, else ValueError."""
    need = {"step": int, "loader": dict, "elapsed_s": (int, float), "tokens": int}
    bad = [k for k, t in need.items() if not isinstance(state.get(k), t)]
    if bad:
        raise ValueError(f"checkpoint {path} is corrupt: trainer.json lacks valid "
                         f"{', '.join(bad)}; use an earlier checkpoint")
    return state


def clean_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Remove half-written checkpoint directories (``.tmp-*``) left by writers that died;
    call it while holding the run's lock (no live writer can own them). Returns them."""
    stale = [p for d in (Path(run_dir), Path(run_dir) / "checkpoints") if d.is_dir()
             for p in d.iterdir() if p.is_dir() and p.name.startswith((".tmp-", ".final."))]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def read_model_config(path: Path) -> tuple[ModelConfig, dict]:
    """The model config and the raw ``config.json`` of a checkpoint directory."""
    meta = _read_json(path / "config.json")
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


def read_checkpoint(path: str | Path, model_config: ModelConfig,
                    tokenizer: Tokenizer = TOKENIZER) -> dict:
    """Everything needed to resume from a checkpoint directory, verified: ``model``,
    ``optimizer``, ``trainer`` and ``rng``. ``ValueError`` if it is corrupt, incomplete, or
    saved for another model than ``model_config`` or with another tokenizer."""
    path = Path(path)
    verify(path)
    saved, meta = read_model_config(path)
    check_same_tokenizer(meta.get("tokenizer") or TOKENIZER.identity(), tokenizer,
                         f"checkpoint {path}", "resume with the tokenizer the run was started "
                         "with (tokenizer in the run's config.json)")
    if saved != model_config:
        diff = {k: (v, model_config.to_dict()[k]) for k, v in saved.to_dict().items()
                if model_config.to_dict()[k] != v}
        raise ValueError(f"checkpoint {path} was saved for another model config "
                         f"(saved vs now: {diff})")
    try:
        optimizer = torch.load(path / "optimizer.pt", weights_only=True)
        rng = torch.load(path / "rng.pt", weights_only=True)
    except Exception as err:  # torch.load raises many types for damaged pickles
        raise ValueError(f"checkpoint {path} is corrupt: {err}") from None
    return {"model": read_weights(path, model_config), "optimizer": optimizer,
            "trainer": check_trainer_state(_read_json(path / "trainer.json"), path), "rng": rng}


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
                "(path, attn_implementation=\"sdpa\")`, or `lighthouse_attn.train.load_model`")
    return "load with `lighthouse_attn.train.checkpoint.load_model`"


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
        save time), ``attention``, ``model_config`` (dict) and ``tokenizer``.

    Raises:
        ValueError: no model there, or a corrupt or mismatched checkpoint.
    """
    model_dir = resolve_model_dir(path)
    if is_hf_checkpoint(model_dir):
        from ..models.hf_causal_lm import load_dense_checkpoint

        model = load_dense_checkpoint(model_dir)
        config, meta = model.config, {"step": None, "attention": "dense"}
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
            "tokenizer": model_tokenizer(model_dir).identity()}
    return model, info


def model_tokenizer(model_dir: str | Path) -> Tokenizer:
    """The tokenizer a model directory was trained with (:func:`resolve_model_dir`'s answer):
    the one its ``config.json`` records, or, for an HF checkpoint, the one saved beside it."""
    model_dir = Path(model_dir)
    if is_hf_checkpoint(model_dir):
        from ..models.hf_causal_lm import saved_tokenizer

        return saved_tokenizer(model_dir)
    return tokenizer_from_identity(_read_json(model_dir / "config.json").get("tokenizer"),
                                   model_dir)
