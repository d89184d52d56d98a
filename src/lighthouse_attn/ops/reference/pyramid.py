"""Symmetric pooling into the pyramid (SPEC section 1)."""

from __future__ import annotations

import torch
from torch import Tensor


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half-precision inputs, the input dtype for fp32 and fp64."""
    return torch.promote_types(dtype, torch.float32)


def pool(x: Tensor, window: int) -> Tensor:
    """Mean of ``x`` (``(..., N, D)``) over consecutive windows of ``window`` rows.

    Accumulates in fp32 (fp64 stays fp64) and returns the input dtype: ``(..., N/window, D)``.
    ``N`` must be a multiple of ``window``.
    """
    if window == 1:
        return x
    *lead, n, d = x.shape
    pooled = x.reshape(*lead, n // window, window, d).to(accumulation_dtype(x.dtype)).mean(-2)
    return pooled.to(x.dtype)


def build_pyramid(x: Tensor, num_levels: int, pooling_factor: int) -> list[Tensor]:
    """Levels ``0 .. L-1`` of ``x`` (``(B, H, N, D)``): level ``l`` is ``(B, H, N/p^l, D)``, the
    mean of the base rows over each window of ``p^l`` (level 0 is ``x`` itself)."""
    return [pool(x, pooling_factor**lvl) for lvl in range(num_levels)]
