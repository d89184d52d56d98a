"""Triton twin of ``ops.lse_attention.merge_reference``: two attentions of the same queries
over two sets of keys merged in place by their logsumexps, in one launch (the torch twin
takes eight)."""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from .launch import accumulator, cdiv, fast, next_pow2

ROWS = 32  # rows per program


@triton.jit
def _merge_kernel(o_ptr, l_ptr, o2_ptr, l2_ptr, E, D, heads, sob, soh, soe, slb, slh, sle,
                  s2b, s2h, s2e, t2b, t2h, t2e, ROWS_: tl.constexpr, BLOCK_D: tl.constexpr,
                  ACC: tl.constexpr):
    e = tl.program_id(0) * ROWS_ + tl.arange(0, ROWS_)
    b = tl.program_id(1) // heads
    h = tl.program_id(1) % heads
    me = e < E
    d = tl.arange(0, BLOCK_D)
    md = me[:, None] & (d < D)[None, :]
    lse = tl.load(l_ptr + b.to(tl.int64) * slb + h.to(tl.int64) * slh + e * sle, mask=me,
                  other=0.0).to(ACC)
    lse2 = tl.load(l2_ptr + b.to(tl.int64) * t2b + h.to(tl.int64) * t2h + e * t2e, mask=me,
                   other=0.0).to(ACC)
    top = tl.maximum(lse, lse2)
    top = tl.where(top == float("-inf"), 0.0, top)  # rows with no keys on either side
    merged = top + tl.log(tl.exp(lse - top) + tl.exp(lse2 - top))
    w = tl.where(merged == float("-inf"), 0.0, tl.exp(lse2 - merged))
    rows = o_ptr + b.to(tl.int64) * sob + h.to(tl.int64) * soh + e.to(tl.int64)[:, None] * soe
    rows2 = (o2_ptr + b.to(tl.int64) * s2b + h.to(tl.int64) * s2h
             + e.to(tl.int64)[:, None] * s2e)
    o = tl.load(rows + d[None, :], mask=md, other=0.0).to(ACC)
    o2 = tl.load(rows2 + d[None, :], mask=md, other=0.0).to(ACC)
    tl.store(rows + d[None, :], (o + w[:, None] * (o2 - o)).to(o_ptr.dtype.element_ty), mask=md)
    tl.store(l_ptr + b.to(tl.int64) * slb + h.to(tl.int64) * slh + e * sle,
             merged.to(l_ptr.dtype.element_ty), mask=me)


def merge_triton(out: Tensor, lse: Tensor, out_2: Tensor, lse_2: Tensor) -> None:
    """:func:`~lighthouse_attn.ops.lse_attention.merge` in one launch: ``out``, ``out_2``
    ``(B, H, E, D)`` with contiguous rows, ``lse``, ``lse_2`` ``(B, H, E)`` (any strides);
    accumulates in ``lse``'s precision."""
    B, H, E, D = out.shape
    fast(_merge_kernel)[(cdiv(E, ROWS), B * H)](
        out, lse, out_2, lse_2, E, D, H, *out.stride()[:3], *lse.stride(),
        *out_2.stride()[:3], *lse_2.stride(), ROWS_=ROWS, BLOCK_D=next_pow2(D),
        ACC=accumulator(lse.dtype), num_warps=4)
