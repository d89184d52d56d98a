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
    def forward(ctx, q0, k0, v0, q1, k1, v1, group, rank: int, world: int, scale: float,
                deterministic: bool):
        piece = torch.stack([torch.stack([k0, v0]), torch.stack([k1, v1])])
        everyone = piece.new_empty((world, *piece.shape))
        collectives.all_gather_into(everyone.view(-1, *piece.shape[1:]), piece, group)
        outs, lses, extras = [], [], []
        for q, chunk in zip((q0, q1), chunk_ids(rank, world)):
            o, lse, extra = prefix_attention_forward(
                q, _upto(everyone, chunk, world, 0), _upto(everyone, chunk, world, 1), scale)
            outs.append(o)
            lses.append(lse)
            extras.append(extra)
        ctx.save_for_backward(q0, q1, *outs, *lses, everyone)
        ctx.extras, ctx.meta = extras, (group, rank, world, scale, deterministic)
        return tuple(outs)

    @staticmethod
    def backward(ctx, do0, do1):
        q0, q1, o0, o1, lse0, lse1, everyone = ctx.saved_tensors
        group, rank, world, scale, deterministic = ctx.meta
        acc = torch.promote_types(everyone.dtype, torch.float32)
        grads = torch.zeros(everyone.shape, dtype=acc, device=everyone.device)
        E = everyone.shape[-2]
        dqs = []
        for q, o, lse, extra, do, chunk in zip((q0, q1), (o0, o1), (lse0, lse1), ctx.extras,
                                               (do0, do1), chunk_ids(rank, world)):
            dq, dk, dv = prefix_attention_backward(
                do, q, _upto(everyone, chunk, world, 0), _upto(everyone, chunk, world, 1), o,
                lse, extra, scale, deterministic=deterministic)
            dqs.append(dq)
            for c in range(chunk + 1):
                r, slot = owner(c, world)
                grads[r, slot, 0] += dk[:, :, c * E:(c + 1) * E]
                grads[r, slot, 1] += dv[:, :, c * E:(c + 1) * E]
        mine = everyone.new_empty(everyone.shape[1:])
        collectives.reduce_scatter_into(mine.view(-1, *mine.shape[2:]),
                                        grads.to(everyone.dtype).view(-1, *mine.shape[2:]),
                                        group)
        (dk0, dv0), (dk1, dv1) = mine
        return dqs[0], dk0, dv0, dqs[1], dk1, dv1, None, None, None, None, None


def two_chunk_inner(gathered: list[tuple[Tensor, Tensor, Tensor]], group, rank: int,
                    world: int, scale: float, deterministic: bool = False
                    ) -> tuple[Tensor, Tensor]:
    """The inner outputs ``(B, H, E, D)`` of this rank's two chunks, from their gathered
    ``(q, k, v)`` (``k``, ``v`` ``(B, H_kv, E, D)``); every rank of ``group`` calls it."""
    (q0, k0, v0), (q1, k1, v1) = gathered
    return _TwoChunkInner.apply(q0, k0.contiguous(), v0.contiguous(), q1, k1.contiguous(),
                                v1.contiguous(), group, rank, world, scale, deterministic)
