"""The collectives of the context-parallel ops, under the names the installed torch has.

Call them through this module (``collectives.all_gather_into(...)``) so that a test can count
what each exchange moves. (Calling the process group's own methods instead, past
``torch.distributed``'s checks, saved no host time on the GPU host measured:
``benchmarks/collective_host.py``.)
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor

from .layout import neighbours

_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = (getattr(dist, "reduce_scatter_single", None)
                          or dist.reduce_scatter_tensor)


def group_info(group) -> tuple:
    """``(group, rank, world)`` with ``None`` meaning the whole world."""
    group = group if group is not None else dist.group.WORLD
    return group, dist.get_rank(group), dist.get_world_size(group)


def all_gather_into(out: Tensor, x: Tensor, group, async_op: bool = False):
    """Every rank's ``x`` into ``out`` (``W`` pieces along dim 0, in rank order); with
    ``async_op`` the work handle to ``wait()`` on."""
    return _all_gather_single(out, x, group=group, async_op=async_op)


def reduce_scatter_into(out: Tensor, x: Tensor, group, async_op: bool = False):
    """This rank's piece of the sum over ranks of ``x`` (``W`` pieces along dim 0); with
    ``async_op`` the work handle to ``wait()`` on."""
    return _reduce_scatter_single(out, x, group=group, async_op=async_op)


def from_neighbours(x: Tensor, step: int, fill: float, group, rank: int, world: int) -> Tensor:
    """For each batch row ``(b, slot)`` of ``x`` ``(2B, ...)`` (contiguous) holding chunk
    ``c``, that row of chunk ``c + step``'s ``x`` (``fill`` past the sequence's ends); one
    all-gather."""
    everyone = x.new_full((world * x.shape[0] + 1, *x.shape[1:]), fill)  # the last: fill
    all_gather_into(everyone[:-1], x, group)
    return everyone.index_select(0, neighbours(rank, world, step, x.shape[0] // 2, x.device))
