"""A rank's two chunks attending over the keys and values of every chunk up to each (a
lower-right causal mask: ``ops.prefix_attention``), forward and backward: the core shared by
the Lighthouse inner node (``gathered.py``, on gathered sequences) and the dense layer
(``dense.py``, on the sequence itself)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.prefix_attention import prefix_attention_backward, prefix_attention_forward


def attend(qs: list[Tensor], kv: Tensor, chunks: tuple[int, int], scale: float,
           deterministic: bool = False) -> tuple[list[Tensor], list[Tensor], list[tuple]]:
    """Outputs, logsumexps and the backward's state of each chunk ``chunks[i]`` with queries
    ``qs[i]`` ``(B, H, E, D)``, over ``kv`` ``(2, B, H_kv, M, D)``: the keys and values of
    chunks ``0 ..`` in sequence order, ``E`` rows each (chunk ``c`` reads the first
    ``(c + 1) E``)."""
    E = qs[0].shape[2]
    outs, lses, saved = [], [], []
    for q, chunk in zip(qs, chunks):
        upto = (chunk + 1) * E
        o, lse, s = prefix_attention_forward(q, kv[0, :, :, :upto], kv[1, :, :, :upto], scale,
                                             deterministic)
        outs.append(o)
        lses.append(lse)
        saved.append(s)
    return outs, lses, saved


def attend_backward(douts: list[Tensor], qs: list[Tensor], kv: Tensor, outs: list[Tensor],
                    lses: list[Tensor], saved: list[tuple], chunks: tuple[int, int],
                    scale: float, deterministic: bool = False) -> tuple[list[Tensor], Tensor]:
    """The queries' gradients (one per chunk) and ``kv``'s (both chunks' summed in fp32, or
    fp64 for fp64, then in ``kv``'s dtype) of :func:`attend`."""
    E = qs[0].shape[2]
    d_kv = torch.zeros(kv.shape, dtype=torch.promote_types(kv.dtype, torch.float32),
                       device=kv.device)
    dqs = []
    for do, q, o, lse, s, chunk in zip(douts, qs, outs, lses, saved, chunks):
        upto = (chunk + 1) * E
        dq, dk, dv = prefix_attention_backward(do, q, kv[0, :, :, :upto], kv[1, :, :, :upto],
                                               o, lse, s, scale, deterministic=deterministic)
        dqs.append(dq)
        d_kv[0, :, :, :upto] += dk
        d_kv[1, :, :, :upto] += dv
    return dqs, d_kv.to(kv.dtype)
