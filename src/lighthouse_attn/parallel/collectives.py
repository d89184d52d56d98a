"""The collectives of the context-parallel ops, under the names the installed torch has.

Call them through this module (``collectives.all_gather_into(...)``) so that a test can count
what each exchange moves.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .layout import neighbours, slot_rows

_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = (getattr(dist, "reduce_scatter_single", None)
                          or dist.reduce_scatter_tensor)


def group_info(group) -> tuple:
    """``(group, rank, world)`` with ``None`` meaning the whole world."""
    group = group if group is not None else dist.group.WORLD
    return group, dist.get_rank(group), dist.get_world_size(group)


class _GatherAutograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        out = x.new_empty((dist.get_world_size(group) * x.shape[0], *x.shape[1:]))
        _all_gather_single(out, x.contiguous(), group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        mine = grad.new_empty((grad.shape[0] // dist.get_world_size(ctx.group),
                               *grad.shape[1:]))
        _reduce_scatter_single(mine, grad.contiguous(), group=ctx.group)
        return mine, None


def gather_autograd(x: Tensor, group) -> Tensor:
    """Every rank's ``x`` concatenated along dim 0 in rank order; its backward
    reduce-scatters the gradient (plain c10d calls in an autograd Function: lighter on the
    host than functional collectives)."""
    return _GatherAutograd.apply(x, group)


def all_gather_into(out: Tensor, x: Tensor, group, async_op: bool = False):
    """Every rank's ``x`` into ``out`` (``W`` pieces along dim 0, in rank order); with
    ``async_op`` the work handle to ``wait()`` on."""
    return _all_gather_single(out, x, group=group, async_op=async_op)


def reduce_scatter_into(out: Tensor, x: Tensor, group) -> None:
    """This rank's piece of the sum over ranks of ``x`` (``W`` pieces along dim 0)."""
    _reduce_scatter_single(out, x, group=group)


def from_neighbours(x: Tensor, step: int, fill: float, group, rank: int, world: int) -> Tensor:
    """For each batch row ``(b, slot)`` of ``x`` ``(2B, ...)`` (contiguous) holding chunk
    ``c``, that row of chunk ``c + step``'s ``x`` (``fill`` past the sequence's ends); one
    all-gather."""
    everyone = x.new_empty((world * x.shape[0], *x.shape[1:]))
    all_gather_into(everyone, x, group)
    slots, index = neighbours(rank, world, step, x.shape[0] // 2, x.device)
    if len(slots) == 2:
        return everyone.index_select(0, index)
    out = torch.full_like(x, fill)
    if slots:
        slot_rows(out, slots).copy_(everyone.index_select(0, index))
    return out
