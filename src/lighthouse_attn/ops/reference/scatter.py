"""Shifted fan-out scatter of the gathered outputs back to the base positions, with its
autograd (SPEC section 6)."""

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


def scatter_forward(o: Tensor, groups: list[tuple[Tensor, Tensor, int]], seq_len: int
                    ) -> Tensor:
    """``out[t] = sum of o[s]`` over entries ``s`` whose shifted window holds ``t``."""
    B, H, S, D = o.shape
    pad = max(width for _, _, width in groups)
    out = o.new_zeros(B, H, seq_len + pad, D, dtype=accumulation_dtype(o.dtype))
    for pos, first, width in groups:
        src = o.gather(2, pos.unsqueeze(-1).expand(-1, -1, -1, D)).to(out.dtype)
        src = src.unsqueeze(3).expand(-1, -1, -1, width, -1).reshape(B, H, -1, D)
        out.scatter_add_(2, _targets(first, width).unsqueeze(-1).expand(-1, -1, -1, D), src)
    return out[:, :, :seq_len].to(o.dtype)


def scatter_backward(grad_out: Tensor, groups: list[tuple[Tensor, Tensor, int]], S: int
                     ) -> Tensor:
    """Adjoint of :func:`scatter_forward`: ``grad_o[s]`` is the sum of ``grad_out`` over the
    shifted window of entry ``s``."""
    B, H, N, D = grad_out.shape
    pad = max(width for _, _, width in groups)
    g = torch.nn.functional.pad(grad_out.to(accumulation_dtype(grad_out.dtype)), (0, 0, 0, pad))
    grad_o = g.new_zeros(B, H, S, D)
    for pos, first, width in groups:
        idx = _targets(first, width).unsqueeze(-1).expand(-1, -1, -1, D)
        summed = g.gather(2, idx).view(B, H, -1, width, D).sum(3)
        grad_o.scatter_(2, pos.unsqueeze(-1).expand(-1, -1, -1, D), summed)
    return grad_o.to(grad_out.dtype)


class _Scatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, o: Tensor, groups: list, seq_len: int) -> Tensor:
        ctx.groups = groups
        ctx.S = o.shape[2]
        return scatter_forward(o, groups, seq_len)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        return scatter_backward(grad_out.contiguous(), ctx.groups, ctx.S), None, None


def scatter(o: Tensor, selection: Selection, seq_len: int, config: LighthouseConfig) -> Tensor:
    """Scatter the gathered outputs ``o`` ``(B, H, S, D)`` to ``(B, H, N, D)``.

    Entry ``(l, m)`` is added to every base position ``t`` with
    ``m p^l + p^l - 1 <= t < m p^l + 2 p^l - 1`` (``t < N``); positions that no entry reaches
    are zero. Sums accumulate in fp32; the result has ``o``'s dtype. ``selection`` must have
    ``H`` heads and the config's per-level counts. Differentiable in ``o``.
    """
    return _Scatter.apply(o, _level_groups(selection, seq_len, config), seq_len)
