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


def slot(x: Tensor, i: int) -> Tensor:
    """Batch rows ``(b, i)`` of ``x`` ``(2B, ...)``: chunk ``i`` of each sequence, a view."""
    return x.unflatten(0, (-1, 2))[:, i]


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
                    deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dq, dk, dv, d_past)`` of :func:`attend`: ``dk``, ``dv`` of the chunks' own keys and
    values, ``d_past`` of ``past``'s (both chunks' summed in fp32, or fp64 for fp64, then in
    ``past``'s dtype; zero past what the chunks read)."""
    E = q.shape[2]
    dq, dk, dv = attention_backward(dout, q, k, v, out, lse, saved[0], scale, causal=True,
                                    deterministic=deterministic)
    d_past = torch.zeros(past.shape, dtype=torch.promote_types(past.dtype, torch.float32),
                         device=past.device)
    for i, chunk in enumerate(chunks):
        if chunk == 0:
            continue
        upto = chunk * E
        dq_i, dk_i, dv_i = attention_backward(
            slot(dout, i), slot(q, i), past[0, :, :, :upto], past[1, :, :, :upto],
            slot(out, i), slot(lse, i), saved[i + 1], scale, causal=False,
            deterministic=deterministic)
        slot(dq, i).add_(dq_i)
        d_past[0, :, :, :upto] += dk_i
        d_past[1, :, :, :upto] += dv_i
    return dq, dk, dv, d_past.to(past.dtype)
