"""Checkpoints for evaluation: load one on a device, name its run, find its training length."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import Tokenizer
from ..models import Llama
from ..models.loading import load_model, model_tokenizer, resolve_model_dir


@dataclass
class EvalCheckpoint:
    """A loaded model with what the evaluations report about it.

    ``model`` is in eval mode on the requested device; ``info`` is :func:`load_model`'s
    ``info``; ``name`` labels plots and file names (the run directory's name, plus
    ``-step_N`` for an intermediate checkpoint); ``trained_seq_len`` is the run's
    ``seq_len`` when its ``config.json`` is found, else ``None``; ``tokenizer`` is the one it
    was trained with.
    """

    model: Llama
    info: dict
    name: str
    trained_seq_len: int | None
    tokenizer: Tokenizer


def run_name(model_dir: Path) -> str:
    """``runs/x/final`` -> ``x``; ``runs/x/checkpoints/step_0000100`` -> ``x-step_0000100``;
    any other checkpoint directory -> its own name."""
    model_dir = Path(model_dir).resolve()
    if model_dir.name == "final":
        return model_dir.parent.name
    if model_dir.parent.name == "checkpoints":
        return f"{model_dir.parent.parent.name}-{model_dir.name}"
    return model_dir.name


def trained_seq_len(model_dir: Path) -> int | None:
    """The ``seq_len`` the run that wrote ``model_dir`` trained at, read from the run's
    ``config.json`` (next to ``final/`` or ``checkpoints/``); ``None`` if it is not there."""
    model_dir = Path(model_dir).resolve()
    run_dir = model_dir.parent.parent if model_dir.parent.name == "checkpoints" else \
        model_dir.parent
    try:
        seq_len = json.loads((run_dir / "config.json").read_text())["train"]["seq_len"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return seq_len if isinstance(seq_len, int) and seq_len > 0 else None


def load_checkpoint(path: str | Path, attention: str = "dense",
                    device: torch.device | str = "cpu") -> EvalCheckpoint:
    """Load the model at ``path`` (a run directory or a checkpoint directory) for evaluation.

    Raises:
        ValueError: no model there, or a corrupt or mismatched checkpoint or tokenizer.
    """
    model_dir = resolve_model_dir(path)
    model, info = load_model(model_dir, attention=attention)
    return EvalCheckpoint(model.to(device), info, run_name(model_dir),
                          trained_seq_len(model_dir), model_tokenizer(model_dir))
