"""The scatter's spill under context parallelism (docs/spec.md section 12): the summaries of
the last window of each level ``l >= 1`` of a chunk add to the first ``p^l - 1`` positions
after the chunk, which belong to the next chunk.

The scatter writes those rows as its *tail* (``ops.reference.scatter.scatter_with_tail``, or
the spread kernel's ``tail`` buffer); here every chunk's tail travels to the next chunk (one
all-gather) and is added to its first rows, and the gradient travels back the same way (the
next chunk's output gradient on those rows is the tail's gradient).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import collectives


def add_incoming(out: Tensor, tail: Tensor, group, rank: int, world: int) -> None:
    """Add to the first rows of each chunk of ``out`` ``(2B, H, n, D)`` the previous chunk's
    ``tail`` ``(2B, H, R, D)`` contiguous (summed in the tail's dtype, rounded once), in
    place; one all-gather."""
    out[:, :, :tail.shape[2]].add_(collectives.from_neighbours(tail, -1, 0.0, group, rank,
                                                               world))


def tail_grad(dout: Tensor, rows: int, group, rank: int, world: int) -> Tensor:
    """The gradient of each chunk's tail given ``dout`` ``(2B, H, n, D)``, the gradient of
    the output after :func:`add_incoming`: the next chunk's ``dout`` on its first ``rows``
    (zero for the sequence's last chunk), in ``dout``'s dtype; one all-gather."""
    return collectives.from_neighbours(dout[:, :, :rows].contiguous(), 1, 0.0, group, rank,
                                       world)


class _TailExchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out, tail, group, rank, world):
        ctx.meta = (tail.shape[2], tail.dtype, group, rank, world)
        out = out.clone()
        add_incoming(out, tail.contiguous(), group, rank, world)
        return out

    @staticmethod
    def backward(ctx, dout):
        rows, dtype, group, rank, world = ctx.meta
        return dout, tail_grad(dout, rows, group, rank, world).to(dtype), None, None, None


def exchange_tails(out: Tensor, tail: Tensor, group, rank: int, world: int) -> Tensor:
    """:func:`add_incoming` out of place, differentiable in ``out`` and ``tail`` (the
    composed torch path)."""
    return _TailExchange.apply(out, tail, group, rank, world)
