"""Where a result was measured: library versions and the device, recorded in every result file."""

from __future__ import annotations

import platform
from importlib import metadata

import torch


def versions() -> dict:
    """Python, torch, CUDA, triton and transformers versions (None where not installed)."""
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda}
    for package in ("triton", "transformers"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def device_name(device: torch.device | str | None = None) -> str:
    """The GPU's name, or the CPU's with its thread count."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
