"""The inner attention of one rank's two chunks under context parallelism, as one autograd
node (docs/spec.md section 12).

Chunk ``c``'s gathered queries attend over the gathered keys and values of chunks ``0 .. c``
in chunk order, with a lower-right causal mask (its own gathered entries last). The forward
all-gathers every rank's gathered keys and values of both chunks in one collective and runs the
two attentions (cuDNN or flash on CUDA in fp16/bf16: ``ops.prefix_attention``); the
backward runs their backward on the saved outputs and logsumexps and returns each piece's key
and value gradients to its rank in one reduce-scatter. Nothing is recomputed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import collectives
from .chunk_attention import attend, attend_backward
from .layout import chunk_ids, chunks_upto, chunks_upto_adjoint


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
    def forward(ctx, q, k, v, group, rank: int, world: int, scale: float, deterministic: bool):
        piece = _local(k, v)
        everyone = piece.new_empty((world, *piece.shape))
        collectives.all_gather_into(everyone.view(-1, *piece.shape[1:]), piece, group)
        chunks = chunk_ids(rank, world)
        kv = chunks_upto(everyone, max(chunks), world)  # the earlier chunk reads a prefix
        qs = q.unflatten(0, (-1, 2))
        outs, lses, extras = attend([qs[:, 0], qs[:, 1]], kv, chunks, scale, deterministic)
        ctx.save_for_backward(q, kv, *outs, *lses)
        ctx.extras = extras
        ctx.meta = (group, rank, world, scale, deterministic, everyone.shape)
        return torch.stack(outs, 1).flatten(0, 1)

    @staticmethod
    def backward(ctx, dout):
        q, kv, o0, o1, lse0, lse1 = ctx.saved_tensors
        group, rank, world, scale, deterministic, shape = ctx.meta
        E = shape[-2] // 2
        qs, douts = q.unflatten(0, (-1, 2)), dout.unflatten(0, (-1, 2))
        dqs, d_kv = attend_backward([douts[:, 0], douts[:, 1]], [qs[:, 0], qs[:, 1]], kv,
                                    [o0, o1], [lse0, lse1], ctx.extras,
                                    chunk_ids(rank, world), scale, deterministic)
        grads = chunks_upto_adjoint(d_kv, world, shape)
        mine = grads.new_empty(shape[1:])
        collectives.reduce_scatter_into(mine.view(-1, *shape[2:]), grads.view(-1, *shape[2:]),
                                        group)
        # (2, B, H_kv, 2E, D) -> k and v (2B, H_kv, E, D), batch rows (b, slot)
        dk, dv = (x.unflatten(2, (2, E)).transpose(1, 2).flatten(0, 1) for x in mine)
        return (torch.stack(dqs, 1).flatten(0, 1), dk, dv, None, None, None, None, None)


def two_chunk_inner(q: Tensor, k: Tensor, v: Tensor, group, rank: int, world: int,
                    scale: float, deterministic: bool = False) -> Tensor:
    """The inner output ``(2B, H, E, D)`` of this rank's two chunks from their gathered
    ``q`` ``(2B, H, E, D)``, ``k``, ``v`` ``(2B, H_kv, E, D)`` (batch rows ``(b, slot)``);
    every rank of ``group`` calls it."""
    return _TwoChunkInner.apply(q, k, v, group, rank, world, scale, deterministic)
