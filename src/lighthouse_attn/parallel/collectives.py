"""The collectives of the context-parallel ops, under the names the installed torch has.

Call them through this module (``collectives.all_gather_into(...)``) so that a test can count
what each exchange moves.
"""

from __future__ import annotations

import torch.distributed as dist
import torch.distributed._functional_collectives as fc
from torch import Tensor

_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_gather_autograd = getattr(fc, "all_gather_single_autograd", None) or fc.all_gather_tensor_autograd


def group_info(group) -> tuple:
    """``(group, rank, world)`` with ``None`` meaning the whole world."""
    group = group if group is not None else dist.group.WORLD
    return group, dist.get_rank(group), dist.get_world_size(group)


def gather_autograd(x: Tensor, dim: int, group) -> Tensor:
    """Every rank's ``x`` concatenated along ``dim`` in rank order; its backward
    reduce-scatters the gradient."""
    return _gather_autograd(x, dim, group)


def all_gather_into(out: Tensor, x: Tensor, group, async_op: bool = False):
    """Every rank's ``x`` into ``out`` (``W`` pieces along dim 0, in rank order); with
    ``async_op`` the work handle to ``wait()`` on."""
    return _all_gather_single(out, x, group=group, async_op=async_op)


def reduce_scatter_into(out: Tensor, x: Tensor, group) -> None:
    """This rank's piece of the sum over ranks of ``x`` (``W`` pieces along dim 0)."""
    dist.reduce_scatter_tensor(out, x, group=group)
