"""Where and how commands run: the device, CPU threads, and the bf16 rule with its autocast.

Used by training, evaluation, benchmarks, ``compare`` and ``generate`` alike, so that
``device``, ``threads`` and ``precision`` mean the same everywhere.
"""

from __future__ import annotations

import contextlib
import os

import torch

from .settings import SettingError

PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``"auto"``: CUDA when available, else CPU. ``ValueError`` for CUDA without a GPU."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SettingError("device cuda, but no CUDA device is available; use device cpu",
                               "device")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def set_cpu_threads(requested: int | None, local_world_size: int = 1) -> int:
    """Set torch's CPU threads and return the number. ``None`` (auto): the cores left free by
    other work at start (1-minute load average), shared by the local processes, at least 1;
    spin-waiting threads on busy cores can make a step many times slower than one thread."""
    if requested is None:
        cores = os.cpu_count() or 1
        free = cores - os.getloadavg()[0]
        requested = max(1, min(cores, round(free)) // local_world_size)
    torch.set_num_threads(requested)
    return requested


def uses_bf16(precision: str, device: torch.device) -> bool:
    """``"bf16"``, or ``"auto"`` on a GPU; ``ValueError`` for an unknown precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, precision: str):
    """bf16 autocast when :func:`uses_bf16`, else a context that does nothing (fp32)."""
    if uses_bf16(precision, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
