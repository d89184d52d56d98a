"""Shifted fan-out scatter of the gathered outputs back to the base positions (SPEC section 6),
differentiable through autograd."""

from __future__ import annotations

import torch
from torch import Tensor

from ...config import LighthouseConfig
from ..types import Selection
from .pyramid import accumulation_dtype


def _level_groups(selection: Selection, seq_len: int, config: LighthouseConfig
                  ) -> list[tuple[Tensor, Tensor, int]]:
    """Per level ``l``: the gathered positions of its entries ``(B, H, n_l)``, the first base
    position each one reaches, ``(m+1) p^l - 1`` (same shape), and the window ``p^l``."""
    order = selection.level.argsort(dim=-1, stable=True)
    groups, offset = [], 0
    for lvl, count in enumerate(config.level_counts(seq_len)):
        pos = order[..., offset:offset + count]
        width = config.pooling_factor**lvl
        first = (selection.index.gather(-1, pos) + 1) * width - 1
        groups.append((pos, first, width))
        offset += count
    return groups


def _targets(first: Tensor, width: int) -> Tensor:
    """Base positions ``first + j``, ``j < width``: ``(B, H, n * width)``."""
    return (first.unsqueeze(-1) + torch.arange(width, device=first.device)).flatten(-2)


def _scatter_sum(o: Tensor, groups: list[tuple[Tensor, Tensor, int]], seq_len: int
                 ) -> Tensor:
    """``out[t] = sum of o[s]`` over entries ``s`` whose shifted window holds ``t``, for
    ``t < seq_len + max window`` (the rows past ``seq_len`` are what the last windows reach
    beyond the end), in the accumulation dtype, from differentiable out-of-place ops
    (autograd's adjoint gathers each window's sum)."""
    B, H, S, D = o.shape
    pad = max(width for _, _, width in groups)
    out = o.new_zeros(B, H, seq_len + pad, D, dtype=accumulation_dtype(o.dtype))
    for pos, first, width in groups:
        src = o.gather(2, pos.unsqueeze(-1).expand(-1, -1, -1, D)).to(out.dtype)
        src = src.unsqueeze(3).expand(-1, -1, -1, width, -1).reshape(B, H, -1, D)
        out = out.scatter_add(2, _targets(first, width).unsqueeze(-1).expand(-1, -1, -1, D),
                              src)
    return out


def scatter(o: Tensor, selection: Selection, seq_len: int, config: LighthouseConfig) -> Tensor:
    """Scatter the gathered outputs ``o`` ``(B, H, S, D)`` to ``(B, H, N, D)``.

    Entry ``(l, m)`` is added to every base position ``t`` with
    ``m p^l + p^l - 1 <= t < m p^l + 2 p^l - 1`` (``t < N``); positions that no entry reaches
    are zero. Sums accumulate in fp32; the result has ``o``'s dtype. ``selection`` must have
    ``H`` heads and the config's per-level counts. Differentiable in ``o``.
    """
    out = _scatter_sum(o, _level_groups(selection, seq_len, config), seq_len)
    return out[:, :, :seq_len].to(o.dtype)


def scatter_with_tail(o: Tensor, selection: Selection, seq_len: int, config: LighthouseConfig
                      ) -> tuple[Tensor, Tensor]:
    """:func:`scatter`, and its tail: what the entries add to the ``p^(L-1) - 1`` positions
    after the end, ``(B, H, p^(L-1) - 1, D)`` in the accumulation dtype (the next chunk's
    share under context parallelism). Differentiable in ``o``."""
    out = _scatter_sum(o, _level_groups(selection, seq_len, config), seq_len)
    end = seq_len + config.coarsest_window - 1
    return out[:, :, :seq_len].to(o.dtype), out[:, :, seq_len:end]
