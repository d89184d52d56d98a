"""Triton twin of ``ops.scores.row_norms``: fp32 L2 norms of rows, summed in fp64.

For fp16/bf16 rows the fp64 sum of squares is exact (whatever the summation order), so this
kernel and the torch reference agree bitwise; for fp32 rows they differ only if a rounding to
fp32 lands on a boundary. One launch scores q and k together.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import cdiv, fast, next_pow2

BLOCK_R = 16  # 16 rows, 4 warps: 7-9% faster than 32 on an H100 (stage_variants.json)


@triton.jit
def _norms(x_ptr, out_ptr, r, n_rows, D, heads, N, sxb, sxh, sxn, BLOCK_D: tl.constexpr):
    mr = r < n_rows
    bh = r // N
    t = r % N
    base = ((bh // heads).to(tl.int64) * sxb + (bh % heads).to(tl.int64) * sxh
            + t.to(tl.int64) * sxn)
    acc = tl.zeros(r.shape, tl.float64)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        x = tl.load(x_ptr + base[:, None] + d[None, :], mask=mr[:, None] & (d < D)[None, :],
                    other=0.0).to(tl.float64)
        acc += tl.sum(x * x, axis=1)
    tl.store(out_ptr + r, tl.sqrt(acc).to(tl.float32), mask=mr)  # fp64 sqrt is IEEE-rounded


@triton.jit
def _row_norms_kernel(a_ptr, b_ptr, oa_ptr, ob_ptr, rows_a, rows_b, blocks_a, D, heads_a,
                      heads_b, N, sab, sah, san, sbb, sbh, sbn,
                      BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    # last block first: the launch ends on the first rows of ``a`` (q), which the pool reads
    # first, so that they are still in L2 when it does
    pid = tl.num_programs(0) - 1 - tl.program_id(0)
    if pid < blocks_a:
        r = pid * BLOCK_R + tl.arange(0, BLOCK_R)
        _norms(a_ptr, oa_ptr, r, rows_a, D, heads_a, N, sab, sah, san, BLOCK_D)
    else:
        r = (pid - blocks_a) * BLOCK_R + tl.arange(0, BLOCK_R)
        _norms(b_ptr, ob_ptr, r, rows_b, D, heads_b, N, sbb, sbh, sbn, BLOCK_D)


def row_norms_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """fp32 row norms of ``a`` ``(B, H_a, N, D)`` and ``b`` ``(B, H_b, N, D)`` in one launch:
    ``(B, H_a, N)`` and ``(B, H_b, N)``."""
    a, b = (x if x.stride(-1) == 1 else x.contiguous() for x in (a, b))
    (B, Ha, N, D), Hb = a.shape, b.shape[1]
    oa = torch.empty(B, Ha, N, dtype=torch.float32, device=a.device)
    ob = torch.empty(B, Hb, N, dtype=torch.float32, device=a.device)
    blocks_a = cdiv(B * Ha * N, BLOCK_R)
    grid = (blocks_a + cdiv(B * Hb * N, BLOCK_R),)
    fast(_row_norms_kernel)[grid](
        a, b, oa, ob, B * Ha * N, B * Hb * N, blocks_a, D, Ha, Hb, N, *a.stride()[:3],
        *b.stride()[:3], BLOCK_R=BLOCK_R, BLOCK_D=min(next_pow2(D), 128), num_warps=4)
    return oa, ob


@torch.library.custom_op("lighthouse_attn::row_norms_pair", mutates_args=())
def row_norms_pair_op(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`row_norms_pair` as an opaque op for torch.compile."""
    return row_norms_pair(a, b)


@row_norms_pair_op.register_fake
def _(a, b):
    return (a.new_empty(a.shape[:3], dtype=torch.float32),
            b.new_empty(b.shape[:3], dtype=torch.float32))


def scores_qk(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Norms of q and k (an opaque op when compiled)."""
    if torch.compiler.is_compiling():
        return row_norms_pair_op(q, k)
    return row_norms_pair(q, k)
