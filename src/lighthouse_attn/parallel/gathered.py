"""The inner attention of one rank's two chunks under context parallelism (docs/spec.md
section 12): forward and backward as plain functions, shared by the one-node Triton path
(``fused.py``) and the composed torch path (:func:`two_chunk_inner`, an autograd node).

Chunk ``c``'s gathered queries attend over the gathered keys and values of chunks ``0 .. c``
in chunk order, with a lower-right causal mask (its own gathered entries last). The forward
all-gathers every rank's gathered keys and values of both chunks in one collective and runs
the attention of ``chunk_attention.py`` (its own keys causal for both chunks in one call, the
earlier chunks' merged in; cuDNN on CUDA in fp16/bf16); the backward runs its backward on the
saved outputs and logsumexps, keeps the gradients of the chunks' own keys and values, and
returns those of the earlier chunks' to their ranks in one reduce-scatter. Nothing is
recomputed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from . import collectives
from .chunk_attention import attend_own, attend_past, own_backward, past_backward
from .layout import chunk_ids, chunks_upto


class InnerContext(NamedTuple):
    """Who runs the inner attention and how: the process group, this rank, the group's
    size, the softmax scale and whether the backward is deterministic."""

    group: object
    rank: int
    world: int
    scale: float
    deterministic: bool


def inner_forward(q: Tensor, kv: Tensor, how: InnerContext) -> tuple[Tensor, list, tuple]:
    """The inner output ``(2B, H, E, D)`` of this rank's two chunks from their gathered
    ``q`` ``(2B, H, E, D)`` and keys and values ``kv`` ``(2, 2B, H_kv, E, D)`` (contiguous;
    batch rows ``(b, slot)``), the tensors its backward needs (to save with
    ``save_for_backward``) and the rest of its state; every rank of ``how.group`` calls it."""
    everyone = kv.new_empty((how.world, *kv.shape))
    work = collectives.all_gather_into(everyone.view(-1, *kv.shape[1:]), kv, how.group,
                                       async_op=True)
    k, v = kv
    out, lse, own = attend_own(q, k, v, how.scale, how.deterministic)  # while kv travels
    work.wait()
    chunks = chunk_ids(how.rank, how.world)
    past = chunks_upto(everyone, max(chunks) - 1, how.world)  # chunks before the later one
    saved = [own, *attend_past(q, out, lse, past, chunks, how.scale, how.deterministic)]
    return out, [q, k, v, past, out, lse], (saved, everyone.shape)


def inner_backward(dout: Tensor, tensors: list, state: tuple, how: InnerContext
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` of :func:`inner_forward` from the gradient of its output and what it
    returned (``dk``, ``dv`` of the two halves of ``kv``); every rank of ``how.group`` calls
    it."""
    q, k, v, past, out, lse = tensors
    saved, shape = state
    past_dq, grads = past_backward(dout, q, past, out, lse, saved,
                                   chunk_ids(how.rank, how.world), how.scale,
                                   pieces_shape=shape, world=how.world,
                                   deterministic=how.deterministic)
    mine = grads.new_empty(shape[1:])
    work = collectives.reduce_scatter_into(mine, grads.view(-1, *shape[2:]), how.group,
                                           async_op=True)
    # while the gradients travel
    dq, dk, dv = own_backward(dout, q, k, v, out, lse, own_state=saved[0], past_dq=past_dq,
                              scale=how.scale, deterministic=how.deterministic)
    work.wait()
    return dq, dk.add_(mine[0]), dv.add_(mine[1])


class _TwoChunkInner(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, how: InnerContext):
        out, tensors, ctx.state = inner_forward(q, torch.stack([k, v]), how)
        ctx.save_for_backward(*tensors)
        ctx.how = how
        return out

    @staticmethod
    def backward(ctx, dout):
        return (*inner_backward(dout.contiguous(), list(ctx.saved_tensors), ctx.state,
                                ctx.how), None)


def two_chunk_inner(q: Tensor, k: Tensor, v: Tensor, how: InnerContext) -> Tensor:
    """:func:`inner_forward`'s output as an autograd node (the composed torch path)."""
    return _TwoChunkInner.apply(q, k, v, how)
