"""Which implementation runs a call: the Triton kernels or the pure-PyTorch reference path."""

from __future__ import annotations

import importlib.util
import os

import torch

from ..config import LighthouseConfig

MAX_TRITON_LEVELS = 7
MAX_TRITON_WINDOW = 128  # coarsest window p^(L-1) the span kernels hold in registers
HAS_TRITON = importlib.util.find_spec("triton") is not None


def triton_unsupported(config: LighthouseConfig, q: torch.Tensor) -> str | None:
    """Why the Triton kernels cannot run this call, or ``None`` if they can."""
    if not HAS_TRITON:
        return "triton is not installed (pip install 'lighthouse-attn[triton]')"
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        return ("the inputs are not CUDA tensors (set TRITON_INTERPRET=1 to run the kernels "
                "on the CPU for testing)")
    p = config.pooling_factor
    if p & (p - 1):
        return f"pooling_factor must be a power of two (got {p}); use 2, 4 or 8"
    if config.num_levels > MAX_TRITON_LEVELS:
        return f"num_levels must be <= {MAX_TRITON_LEVELS} (got {config.num_levels})"
    if config.coarsest_window > MAX_TRITON_WINDOW:
        return (f"the coarsest window p^(L-1) = {config.coarsest_window} must be <= "
                f"{MAX_TRITON_WINDOW}; use fewer levels or a smaller pooling_factor")
    return None


def resolve_backend(config: LighthouseConfig, q: torch.Tensor) -> str:
    """``"triton"`` or ``"torch"`` for this call. ``auto`` picks Triton for CUDA inputs it
    supports; an explicit ``backend="triton"`` that cannot run raises ``ValueError``."""
    if config.backend == "torch":
        return "torch"
    if config.backend == "auto":
        return "triton" if q.is_cuda and triton_unsupported(config, q) is None else "torch"
    reason = triton_unsupported(config, q)
    if reason:
        raise ValueError(f"backend='triton' cannot run this call: {reason}; or use "
                         "backend='torch' (reference) or 'auto'")
    return "triton"
