"""A rank's two chunks attending over the keys and values of every chunk up to each (a
lower-right causal mask), forward and backward: the core shared by the Lighthouse inner node
(``gathered.py``, on gathered sequences) and the dense layer (``dense.py``, on the sequence
itself).

The chunks are batch rows ``(b, slot)`` of one ``(2B, H, E, D)`` tensor. Both attend over
their own keys with a square causal mask in one call; each chunk ``c > 0`` then attends over
the keys of chunks ``0 .. c-1`` without a mask, and the two are merged by their logsumexps
(``ops.lse_attention``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.lse_attention import attention_backward, attention_forward, merge
from .layout import read_rows


def slot(x: Tensor, i: int) -> Tensor:
    """Batch rows ``(b, i)`` of ``x`` ``(2B, ...)``: chunk ``i`` of each sequence, a view."""
    return x[i::2]


def attend(q: Tensor, k: Tensor, v: Tensor, past: Tensor, chunks: tuple[int, int],
           scale: float, deterministic: bool = False) -> tuple[Tensor, Tensor, list]:
    """Outputs ``(2B, H, E, D)``, logsumexps ``(2B, H, E)`` and the backward's state of the
    chunks ``chunks`` whose queries ``q``, keys and values ``k``, ``v`` ``(2B, H_kv, E, D)``
    are batch rows ``(b, slot)``; ``past`` ``(2, B, H_kv, M, D)`` holds the keys and values
    of chunks ``0 ..`` in sequence order (chunk ``c`` reads the first ``c E``)."""
    E = q.shape[2]
    out, lse, own = attention_forward(q, k, v, scale, causal=True, deterministic=deterministic)
    saved = [own]
    for i, chunk in enumerate(chunks):
        if chunk == 0:
            saved.append(None)
            continue
        o, lse_i, s = attention_forward(slot(q, i), past[0, :, :, :chunk * E],
                                        past[1, :, :, :chunk * E], scale, causal=False,
                                        deterministic=deterministic)
        merge(slot(out, i), slot(lse, i), o, lse_i)
        saved.append(s)
    return out, lse, saved


def attend_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, past: Tensor, out: Tensor,
                    lse: Tensor, saved: list, chunks: tuple[int, int], scale: float,
                    pieces_shape: torch.Size, world: int, deterministic: bool = False
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dq, dk, dv, d_pieces)`` of :func:`attend`: ``dk``, ``dv`` of the chunks' own keys
    and values, and ``d_pieces`` the gradient of the all-gathered pieces ``(W, 2, 2B, H_kv,
    E, D)`` (``pieces_shape``) that ``past`` was read from (``layout.chunks_upto``), in
    ``past``'s dtype: each earlier chunk's gradient written straight into its owner's slot,
    summed in fp32 (fp64 for fp64) where both chunks read it, zero where neither does."""
    E = q.shape[2]
    dq, dk, dv = attention_backward(dout, q, k, v, out, lse, saved[0], scale, causal=True,
                                    deterministic=deterministic)
    reads = []  # (keys read, (dk, dv)) of each chunk that reads earlier chunks
    for i, chunk in enumerate(chunks):
        if chunk == 0:
            continue
        upto = chunk * E
        dq_i, dk_i, dv_i = attention_backward(
            slot(dout, i), slot(q, i), past[0, :, :, :upto], past[1, :, :, :upto],
            slot(out, i), slot(lse, i), saved[i + 1], scale, causal=False,
            deterministic=deterministic)
        slot(dq, i).add_(dq_i)
        reads.append((upto, (dk_i, dv_i)))
    return dq, dk, dv, _pieces_grad(reads, past, pieces_shape, world)


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
