"""The inner attention of one rank's two chunks under context parallelism, as one autograd
node (docs/spec.md section 12).

Chunk ``c``'s gathered queries attend over the gathered keys and values of chunks ``0 .. c``
in chunk order, with a lower-right causal mask (its own gathered entries last). The forward
all-gathers every rank's gathered keys and values of both chunks in one collective and runs
the attention of ``chunk_attention.py`` (its own keys causal for both chunks in one call, the
earlier chunks' merged in; cuDNN on CUDA in fp16/bf16); the backward runs its backward on the
saved outputs and logsumexps, keeps the gradients of the chunks' own keys and values, and
returns those of the earlier chunks' to their ranks in one reduce-scatter. Nothing is
recomputed. The node also returns the chunks' spill (``spill.py``), read from its outputs,
and adds the spill's gradient to theirs: the spill has no autograd nodes of its own.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import collectives
from .chunk_attention import attend, attend_backward
from .layout import as_batch, chunk_ids, chunks_upto
from .spill import SpillPlan, add_spill_grad, spill


def _local(k: Tensor, v: Tensor) -> Tensor:
    """``(2, B, H_kv, 2E, D)``: keys and values of this rank's two chunks, in its local order
    along the sequence, from ``k``, ``v`` ``(2B, H_kv, E, D)`` with batch rows ``(b, slot)``."""
    B2, Hkv, E, D = k.shape
    piece = k.new_empty(2, B2 // 2, Hkv, 2, E, D)
    for i, x in enumerate((k, v)):
        piece[i] = x.unflatten(0, (-1, 2)).transpose(1, 2)
    return piece.view(2, B2 // 2, Hkv, 2 * E, D)


class _TwoChunkInner(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: SpillPlan, group, rank: int, world: int, scale: float,
                deterministic: bool):
        piece = _local(k, v)
        everyone = piece.new_empty((world, *piece.shape))
        collectives.all_gather_into(everyone.view(-1, *piece.shape[1:]), piece, group)
        chunks = chunk_ids(rank, world)
        past = chunks_upto(everyone, max(chunks) - 1, world)  # chunks before the later one
        out, lse, saved = attend(q, k, v, past, chunks, scale, deterministic)
        ctx.save_for_backward(q, k, v, past, out, lse)
        ctx.saved = saved
        ctx.meta = (group, rank, world, scale, deterministic, everyone.shape)
        ctx.plan = plan
        return out, spill(out, plan)

    @staticmethod
    def backward(ctx, dout, dspill):
        q, k, v, past, out, lse = ctx.saved_tensors
        group, rank, world, scale, deterministic, shape = ctx.meta
        dout = add_spill_grad(dout, dspill, ctx.plan)
        dq, dk, dv, grads = attend_backward(dout, q, k, v, past, out, lse, ctx.saved,
                                            chunk_ids(rank, world), scale, pieces_shape=shape,
                                            world=world, deterministic=deterministic)
        mine = grads.new_empty(shape[1:])
        collectives.reduce_scatter_into(mine.view(-1, *shape[2:]), grads.view(-1, *shape[2:]),
                                        group)
        return (dq, dk + as_batch(mine[0]), dv + as_batch(mine[1]), None, None, None, None,
                None, None)


def two_chunk_inner(q: Tensor, k: Tensor, v: Tensor, plan: SpillPlan, group, rank: int,
                    world: int, scale: float, deterministic: bool = False
                    ) -> tuple[Tensor, Tensor]:
    """The inner output ``(2B, H, E, D)`` of this rank's two chunks from their gathered
    ``q`` ``(2B, H, E, D)``, ``k``, ``v`` ``(2B, H_kv, E, D)`` (batch rows ``(b, slot)``),
    and each chunk's spill ``(2B, H, p^(L-1) - 1, D)`` by ``plan``; every rank of ``group``
    calls it."""
    return _TwoChunkInner.apply(q, k, v, plan, group, rank, world, scale, deterministic)
