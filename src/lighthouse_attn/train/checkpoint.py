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
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from ..data import TOKENIZER, Tokenizer
from ..data.tokenizer import check_same_tokenizer
from ..models import ModelConfig
from ..models.interface import HF_FORMAT, OUR_FORMAT
from ..models.loading import (
    FORMAT,
    list_checkpoints,
    read_json,
    read_model_config,
    read_weights,
    sha256_file,
    verify,
)
from ..settings import SettingError


# --------------------------------------------------------------------------- writing
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
        manifest[f.name] = {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
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


def prune_checkpoints(run_dir: str | Path, keep: int, protect: set[int] = frozenset()) -> None:
    """Delete all but the newest ``keep`` checkpoints (steps in ``protect`` stay)."""
    ckpts = list_checkpoints(run_dir)
    for step, path in ckpts[:max(0, len(ckpts) - keep)]:
        if step not in protect:
            shutil.rmtree(path)


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
        raise SettingError(f"run directory {run_dir} is a file, not a directory; choose another "
                           "run_dir", "run_dir")
    if not run_dir.is_dir():
        return
    held = sorted(p.name for p in run_dir.iterdir() if p.name != ".lock")
    if overwrite or not held:
        return
    ckpts = list_checkpoints(run_dir)
    if ckpts and not (run_dir / "config.json").is_file():
        raise SettingError(f"{run_dir} holds checkpoints ({', '.join(p.name for _, p in ckpts)}) "
                           "but no config.json: the run's settings are lost. To resume, write "
                           "config.json again with the settings it was started with and "
                           f"resume {run_dir}; to export its model, run lighthouse-attn export "
                           f"{ckpts[-1][1]} OUT; to start over and delete them, pass "
                           "overwrite", "resume", "overwrite")
    if (run_dir / "config.json").is_file():
        raise SettingError(f"{run_dir} already holds a run; continue it with resume {run_dir}, "
                           "or pass overwrite to replace it, or choose another run_dir",
                           "resume", "overwrite", "run_dir")
    shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
    raise SettingError(f"{run_dir} is not empty ({shown}); a fresh run needs a new or empty "
                       "directory: choose another run_dir, or pass overwrite to replace "
                       f"{', '.join(n for n in RUN_FILES if n in held) or 'nothing'} "
                       "(other files stay)", "run_dir", "overwrite")


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
            "trainer": check_trainer_state(read_json(path / "trainer.json"), path), "rng": rng}


