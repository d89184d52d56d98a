"""A rank's two chunks attending over the keys and values of every chunk up to each (a
lower-right causal mask), forward and backward: the core shared by the Lighthouse inner node
(``gathered.py``, on gathered sequences) and the dense layer (``dense.py``, on the sequence
itself).

The chunks are batch rows ``(b, slot)`` of one ``(2B, H, E, D)`` tensor. Both attend over
their own keys with a square causal mask in one call; each chunk ``c > 0`` then attends over
the keys of chunks ``0 .. c-1`` without a mask, and the two are merged by their logsumexps
(``ops.lse_attention``). The own call needs nothing from other ranks, so a caller can run it
while the earlier chunks' keys and values are still being gathered (:func:`attend_own`, then
:func:`attend_past`), and its backward while their gradients are being reduce-scattered
(:func:`past_backward`, then :func:`own_backward`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.lse_attention import attention_backward, attention_forward, merge
from .layout import read_rows


def slot(x: Tensor, i: int) -> Tensor:
    """Batch rows ``(b, i)`` of ``x`` ``(2B, ...)``: chunk ``i`` of each sequence, a view."""
    return x[i::2]


def attend_own(q: Tensor, k: Tensor, v: Tensor, scale: float, deterministic: bool = False
               ) -> tuple[Tensor, Tensor, object]:
    """Both chunks (batch rows ``(b, slot)`` of ``q`` ``(2B, H, E, D)``, ``k``, ``v``
    ``(2B, H_kv, E, D)``) over their own keys with a causal mask: output, logsumexp and
    the backward's state. Needs nothing from other ranks, so it can run while their keys and
    values are on the way."""
    return attention_forward(q, k, v, scale, causal=True, deterministic=deterministic)


def attend_past(q: Tensor, out: Tensor, lse: Tensor, past: Tensor, chunks: tuple[int, int],
                scale: float, deterministic: bool = False) -> list:
    """Merge into :func:`attend_own`'s ``out`` and ``lse`` (in place) each chunk ``c > 0``
    over the keys and values of chunks ``0 .. c-1``, read from ``past`` ``(2, B, H_kv, M,
    D)`` (chunks ``0 ..`` in sequence order; chunk ``c`` reads the first ``c E``); the
    backward's state per slot (``None`` for chunk 0)."""
    E = q.shape[2]
    saved = []
    for i, chunk in enumerate(chunks):
        if chunk == 0:
            saved.append(None)
            continue
        o, lse_i, s = attention_forward(slot(q, i), past[0, :, :, :chunk * E],
                                        past[1, :, :, :chunk * E], scale, causal=False,
                                        deterministic=deterministic)
        merge(slot(out, i), slot(lse, i), o, lse_i)
        saved.append(s)
    return saved


def past_backward(dout: Tensor, q: Tensor, past: Tensor, out: Tensor, lse: Tensor,
                  saved: list, chunks: tuple[int, int], scale: float, pieces_shape: torch.Size,
                  world: int, deterministic: bool = False) -> tuple[list, Tensor]:
    """The backward of :func:`attend_past`: ``[(slot, dq)]`` of the chunks that read earlier
    chunks, and ``d_pieces``, the gradient of the all-gathered pieces ``(W, 2, 2B, H_kv, E,
    D)`` (``pieces_shape``) that ``past`` was read from (``layout.chunks_upto``), in ``past``'s
    dtype: each earlier chunk's gradient written straight into its owner's slot, summed in fp32
    (fp64 for fp64) where both chunks read it, zero where neither does. ``saved``:
    ``[own, *past]``, :func:`attend_own`'s state then :func:`attend_past`'s."""
    E = q.shape[2]
    dq, reads = [], []  # reads: (keys read, (dk, dv)) of each chunk that reads earlier chunks
    for i, chunk in enumerate(chunks):
        if chunk == 0:
            continue
        upto = chunk * E
        dq_i, dk_i, dv_i = attention_backward(
            slot(dout, i), slot(q, i), past[0, :, :, :upto], past[1, :, :, :upto],
            slot(out, i), slot(lse, i), saved[i + 1], scale, causal=False,
            deterministic=deterministic)
        dq.append((i, dq_i))
        reads.append((upto, (dk_i, dv_i)))
    return dq, _pieces_grad(reads, past, pieces_shape, world)


def own_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                 own_state: object, past_dq: list, scale: float, deterministic: bool = False
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """The backward of :func:`attend_own` (``own_state``: the state it returned):
    ``(dq, dk, dv)``, with the queries' gradients ``past_dq`` from :func:`past_backward`
    added."""
    dq, dk, dv = attention_backward(dout, q, k, v, out, lse, own_state, scale, causal=True,
                                    deterministic=deterministic)
    for i, dq_i in past_dq:
        slot(dq, i).add_(dq_i)
    return dq, dk, dv


def _pieces_grad(reads: list, past: Tensor, shape: torch.Size, world: int) -> Tensor:
    """The gradient of the all-gathered pieces from the reads of earlier chunks (at most two,
    each a prefix of ``past`` of whole chunks): the longer read's gradient, the shorter one
    added in place where they overlap (one rounding of their exact sum, as accumulating both
    in fp32 would give), written into each chunk's slot by one indexed copy per keys and
    values; zero where no chunk reads."""
    d = past.new_zeros(shape)
    if not reads:
        return d
    reads = sorted(reads, key=lambda r: r[0])  # the longer read last
    longest, full = reads[-1]
    B, n = shape[2] // 2, shape[-2]
    rows = d.view(-1, *shape[3:])  # (W * 2 * 2B, H_kv, n, D): rank, keys/values, batch row
    for kind in range(2):
        grad = full[kind]
        if len(reads) == 2:
            grad[..., :reads[0][0], :].add_(reads[0][1][kind])
        chunks = grad.unflatten(2, (longest // n, n)).movedim(2, 0).flatten(0, 1)
        rows.index_copy_(0, read_rows(longest // n, B, kind, world, d.device), chunks)
    return d
