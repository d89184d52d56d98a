"""Dense causal attention over a sequence sharded across ranks (always-dense layers and
stage 2 under context parallelism), with the memory of the keys and values bounded.

Each rank all-gathers the keys and values of a group of kv heads at a time, attends its two
local chunks over them with a lower-right causal mask, and drops them: nothing of the whole
sequence is kept for backward, only the local outputs and their logsumexps. The backward
gathers each group again, runs that group's attention backward from the saved outputs and
logsumexps (nothing recomputed), and reduce-scatters the gradients of the keys and values back
to their ranks. The next group's gather runs while the current group computes; within a
group, the chunks' attention over their own keys (which needs nothing gathered) runs while
the group's gather finishes, and its backward while the group's gradients are
reduce-scattered. In the forward a rank so holds three groups' worth of the whole
sequence's keys and values (``kv_heads_per_gather`` heads each: the group in use, gathered
and in sequence order, and the next in flight; the backward about two more, their
gradients), in place of every head's for every dense layer until its backward; the price is
the keys and values sent twice (docs/distributed.md).

Why not PyTorch's context-parallel ring attention
(``torch.distributed.tensor.experimental.context_parallel``): it uses the same head-tail
layout, but its ring only handles the CUDA attention kernels (flash, efficient, cuDNN), so it
cannot run on the CPU processes on which this op is tested against one process, and its API
is still experimental; the same bytes move either way.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.api import autocast_inputs
from ..ops.inner import resolve_scale
from . import collectives
from .chunk_attention import attend_own, attend_past, own_backward, past_backward
from .layout import as_batch, chunk_ids, chunks_upto, from_batch

GATHER_BUDGET_BYTES = 1 << 29
"""Bytes of one group's gathered keys and values that ``kv_heads_per_gather`` aims under."""


def kv_heads_per_gather(kv_heads: int, seq_len: int, batch_size: int, head_dim: int,
                        itemsize: int, budget: int = GATHER_BUDGET_BYTES) -> int:
    """The most kv heads (a divisor of ``kv_heads``, at least 1) whose keys and values over
    the whole ``seq_len`` take at most ``budget`` bytes."""
    per_head = 2 * batch_size * seq_len * head_dim * itemsize
    return max((h for h in range(1, kv_heads + 1) if kv_heads % h == 0 and h * per_head <= budget),
               default=1)


def _gathered_groups(k: Tensor, v: Tensor, heads: int, group, world: int):
    """``(first kv head, gathered, work)`` per group of ``heads`` kv heads, ``gathered`` of
    shape ``(W, 2, 2B, heads, n, D)`` (rank, keys/values, batch rows ``(b, slot)``), to read
    after ``work.wait()``; the next group's all-gather is in flight while the caller uses the
    current one."""
    starts = list(range(0, k.shape[1], heads))

    def launch(h0: int):
        piece = torch.stack([as_batch(k[:, h0:h0 + heads]), as_batch(v[:, h0:h0 + heads])])
        out = piece.new_empty((world, *piece.shape))
        return out, collectives.all_gather_into(out.view(-1, *piece.shape[1:]), piece, group,
                                                async_op=True)

    pending = launch(starts[0])
    for i, h0 in enumerate(starts):
        gathered, work = pending
        if i + 1 < len(starts):
            pending = launch(starts[i + 1])
        yield h0, gathered, work


class _DenseContextParallel(torch.autograd.Function):
    """Both local chunks attending over every chunk up to each, one group of kv heads at a
    time; the backward gathers each group again and runs the attention's backward from the
    saved outputs and logsumexps (``chunk_attention.py``)."""

    @staticmethod
    def forward(ctx, q, k, v, group, rank, world, heads, scale):
        per_kv = q.shape[1] // k.shape[1]
        chunks = chunk_ids(rank, world)
        out, lse, extras = torch.empty_like(q), None, []
        for h0, gathered, work in _gathered_groups(k, v, heads, group, world):
            rows, kv_rows = slice(h0 * per_kv, (h0 + heads) * per_kv), slice(h0, h0 + heads)
            q_g = as_batch(q[:, rows])
            o, lse_g, own = attend_own(q_g, as_batch(k[:, kv_rows]), as_batch(v[:, kv_rows]),
                                       scale)  # while the group's keys and values travel
            work.wait()
            saved = [own, *attend_past(q_g, o, lse_g, chunks_upto(gathered, max(chunks) - 1,
                                                                  world), chunks, scale)]
            if lse is None:
                lse = q.new_empty(q.shape[:3], dtype=lse_g.dtype)
            out[:, rows], lse[:, rows] = from_batch(o), from_batch(lse_g)
            extras.append(saved)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.extras, ctx.meta = extras, (group, rank, world, heads, scale)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        group, rank, world, heads, scale = ctx.meta
        per_kv = q.shape[1] // k.shape[1]
        chunks = chunk_ids(rank, world)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        groups = _gathered_groups(k, v, heads, group, world)
        for (h0, gathered, work), saved in zip(groups, ctx.extras):
            rows, kv_rows = slice(h0 * per_kv, (h0 + heads) * per_kv), slice(h0, h0 + heads)
            dout_g, q_g, out_g, lse_g = (as_batch(x[:, rows]) for x in (dout, q, out, lse))
            work.wait()
            past_dq, d_gathered = past_backward(
                dout_g, q_g, chunks_upto(gathered, max(chunks) - 1, world), out_g, lse_g,
                saved, chunks, scale, pieces_shape=gathered.shape, world=world)
            mine = d_gathered.new_empty(d_gathered.shape[1:])
            sent = collectives.reduce_scatter_into(mine, d_gathered.view(-1, *mine.shape[1:]),
                                                   group, async_op=True)
            dq_g, dk_g, dv_g = own_backward(dout_g, q_g, as_batch(k[:, kv_rows]),
                                            as_batch(v[:, kv_rows]), out_g, lse_g,
                                            own_state=saved[0], past_dq=past_dq,
                                            scale=scale)  # while the gradients travel
            dq[:, rows] = from_batch(dq_g)
            sent.wait()
            dk[:, kv_rows] = from_batch(mine[0] + dk_g)
            dv[:, kv_rows] = from_batch(mine[1] + dv_g)
        return dq, dk, dv, None, None, None, None, None


def dense_attention_cp(q: Tensor, k: Tensor, v: Tensor, group=None, *,
                       scale: float | None = None, kv_heads_per_group: int | None = None
                       ) -> Tensor:
    """Dense causal attention on this rank's shard (the layout of ``layout.py``): each local
    chunk attends over the keys and values of every chunk up to itself, gathered a group of kv
    heads at a time.

    Args:
        q: ``(B, H, 2n, D)``: this rank's two chunks (``shard_sequence``).
        k, v: ``(B, H_kv, 2n, D)``, likewise.
        group: the context-parallel process group (default: the world).
        kv_heads_per_group: kv heads gathered at once, a divisor of ``H_kv``; default
            :func:`kv_heads_per_gather` (the most under ``GATHER_BUDGET_BYTES``).

    Returns:
        This rank's ``(B, H, 2n, D)`` of dense causal attention over the whole sequence, with
        exact gradients. Every rank of the group must call it (it runs collectives).
    """
    q, k, v = autocast_inputs(q, k, v)
    B, _, local_len, D = q.shape
    Hkv = k.shape[1]
    if kv_heads_per_group is not None and (kv_heads_per_group < 1 or Hkv % kv_heads_per_group):
        divisors = [h for h in range(1, Hkv + 1) if Hkv % h == 0]
        raise ValueError(f"kv_heads_per_group must divide the {Hkv} kv heads (got "
                         f"{kv_heads_per_group}); use one of {divisors}")
    group, rank, world = collectives.group_info(group)
    heads = kv_heads_per_group or kv_heads_per_gather(Hkv, local_len * world, B, D,
                                                      k.element_size())
    return _DenseContextParallel.apply(q, k, v, group, rank, world, heads,
                                       resolve_scale(scale, D))
