"""The inner attention of one rank's two chunks under context parallelism, as one autograd
node (docs/spec.md section 12).

Chunk ``c``'s gathered queries attend over the gathered keys and values of chunks ``0 .. c``
in chunk order, with a lower-right causal mask (its own gathered entries last). The forward
all-gathers every rank's gathered keys and values of both chunks in one collective and runs the
two attentions (flash on CUDA in fp16/bf16: ``ops.inner.prefix_attention_forward``); the
backward runs their backward on the saved outputs and logsumexps and returns each piece's key
and value gradients to its rank in one reduce-scatter. Nothing is recomputed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.prefix_attention import prefix_attention_backward, prefix_attention_forward
from . import collectives
from .layout import chunk_ids, owner


def _upto(everyone: Tensor, chunk: int, world: int, which: int) -> Tensor:
    """Keys (``which`` 0) or values (1) of chunks ``0 .. chunk`` in chunk order, from
    ``everyone`` ``(W, 2 slots, 2, B, H_kv, E, D)``."""
    return torch.cat([everyone[(*owner(c, world), which)] for c in range(chunk + 1)], 2)


class _TwoChunkInner(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, group, rank: int, world: int, scale: float, deterministic: bool):
        # (slot, k/v, B, H_kv, E, D): this rank's piece; batch rows of q, k, v are (b, slot)
        piece = torch.stack([k.unflatten(0, (-1, 2)), v.unflatten(0, (-1, 2))]).movedim(2, 0)
        everyone = piece.new_empty((world, *piece.shape))
        collectives.all_gather_into(everyone.view(-1, *piece.shape[1:]), piece.contiguous(),
                                    group)
        qs = q.unflatten(0, (-1, 2))
        outs, lses, extras = [], [], []
        for slot, chunk in enumerate(chunk_ids(rank, world)):
            o, lse, extra = prefix_attention_forward(
                qs[:, slot], _upto(everyone, chunk, world, 0), _upto(everyone, chunk, world, 1),
                scale)
            outs.append(o)
            lses.append(lse)
            extras.append(extra)
        ctx.save_for_backward(q, *outs, *lses, everyone)
        ctx.extras, ctx.meta = extras, (group, rank, world, scale, deterministic)
        return torch.stack(outs, 1).flatten(0, 1)

    @staticmethod
    def backward(ctx, dout):
        q, o0, o1, lse0, lse1, everyone = ctx.saved_tensors
        group, rank, world, scale, deterministic = ctx.meta
        acc = torch.promote_types(everyone.dtype, torch.float32)
        grads = torch.zeros(everyone.shape, dtype=acc, device=everyone.device)
        E = everyone.shape[-2]
        qs, douts = q.unflatten(0, (-1, 2)), dout.unflatten(0, (-1, 2))
        dqs = []
        for slot, (o, lse, extra, chunk) in enumerate(zip((o0, o1), (lse0, lse1), ctx.extras,
                                                          chunk_ids(rank, world))):
            dq, dk, dv = prefix_attention_backward(
                douts[:, slot], qs[:, slot], _upto(everyone, chunk, world, 0),
                _upto(everyone, chunk, world, 1), o, lse, extra, scale,
                deterministic=deterministic)
            dqs.append(dq)
            for c in range(chunk + 1):
                r, j = owner(c, world)
                grads[r, j, 0] += dk[:, :, c * E:(c + 1) * E]
                grads[r, j, 1] += dv[:, :, c * E:(c + 1) * E]
        mine = everyone.new_empty(everyone.shape[1:])
        collectives.reduce_scatter_into(mine.view(-1, *mine.shape[2:]),
                                        grads.to(everyone.dtype).view(-1, *mine.shape[2:]),
                                        group)
        dk, dv = mine.movedim(2, 0).unbind(2)  # (B, slot, H_kv, E, D) each
        return (torch.stack(dqs, 1).flatten(0, 1), dk.flatten(0, 1), dv.flatten(0, 1),
                None, None, None, None, None)


def two_chunk_inner(q: Tensor, k: Tensor, v: Tensor, group, rank: int, world: int,
                    scale: float, deterministic: bool = False) -> Tensor:
    """The inner output ``(2B, H, E, D)`` of this rank's two chunks from their gathered
    ``q`` ``(2B, H, E, D)``, ``k``, ``v`` ``(2B, H_kv, E, D)`` (batch rows ``(b, slot)``);
    every rank of ``group`` calls it."""
    return _TwoChunkInner.apply(q, k, v, group, rank, world, scale, deterministic)
