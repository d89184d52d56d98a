"""Triton twin of ``ops.reference.scores.row_norms``: fp32 L2 norms of rows, summed in fp64;
optionally also the mean of every aligned window of ``W`` rows (the pyramid's coarsest level,
which the pool then copies instead of reading q and k a second time).

For fp16/bf16 rows the fp64 sum of squares is exact (whatever the summation order), so this
kernel and the torch reference agree bitwise; for fp32 rows they differ only if a rounding to
fp32 lands on a boundary. One launch scores q and k together.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import accumulator, cdiv, fast, next_pow2

BLOCK_R = 16  # 16 rows, 4 warps: 7-9% faster than 32 on an H100 (stage_variants.json)
MEANS_WARPS = 1  # warps of a window-mean program (the window's rows stay in one warp)
MEANS_ROWS = 16  # rows it loads at a time (a divisor of BLOCK_R)


def means_apply(window: int, D: int) -> bool:
    """Whether the norm kernel can also produce window means: windows of whole 16-row blocks
    and rows of at most 128 elements (one tile wide)."""
    return window % BLOCK_R == 0 and D <= 128


@triton.jit
def _norms(x_ptr, out_ptr, mean_ptr, blk, n_rows, D, heads, N, sxb, sxh, sxn,
           WIN: tl.constexpr, ROWS: tl.constexpr, MEANS: tl.constexpr, BLOCK_D: tl.constexpr,
           ACC: tl.constexpr):
    """Norms of rows ``[blk * WIN, (blk + 1) * WIN)`` of all ``n_rows = B * heads * N``, ROWS
    at a time; with MEANS (``N`` a multiple of WIN), also their mean, stored as row ``blk``."""
    msum = tl.zeros((BLOCK_D,), ACC)
    for c in tl.static_range(WIN // ROWS):
        r = blk * WIN + c * ROWS + tl.arange(0, ROWS)
        mr = r < n_rows
        bh = r // N
        t = r % N
        base = ((bh // heads).to(tl.int64) * sxb + (bh % heads).to(tl.int64) * sxh
                + t.to(tl.int64) * sxn)
        acc = tl.zeros(r.shape, tl.float64)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            x = tl.load(x_ptr + base[:, None] + d[None, :],
                        mask=mr[:, None] & (d < D)[None, :], other=0.0)
            if MEANS:
                msum += tl.sum(x.to(ACC), axis=0)
            x = x.to(tl.float64)
            acc += tl.sum(x * x, axis=1)
        tl.store(out_ptr + r, tl.sqrt(acc).to(tl.float32), mask=mr)  # IEEE-rounded sqrt
    if MEANS:
        d = tl.arange(0, BLOCK_D)
        tl.store(mean_ptr + blk.to(tl.int64) * D + d,
                 (msum * (1.0 / WIN)).to(mean_ptr.dtype.element_ty), mask=d < D)


@triton.jit
def _row_norms_kernel(a_ptr, b_ptr, oa_ptr, ob_ptr, ma_ptr, mb_ptr, rows_a, rows_b, blocks_a,
                      D, heads_a, heads_b, N, sab, sah, san, sbb, sbh, sbn,
                      WIN: tl.constexpr, ROWS: tl.constexpr, MEANS: tl.constexpr,
                      BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    # last block first: the launch ends on the first rows of ``a`` (q), which the pool reads
    # first, so that they are still in L2 when it does
    pid = tl.num_programs(0) - 1 - tl.program_id(0)
    if pid < blocks_a:
        _norms(a_ptr, oa_ptr, ma_ptr, pid, rows_a, D, heads_a, N, sab, sah, san, WIN, ROWS,
               MEANS, BLOCK_D, ACC)
    else:
        _norms(b_ptr, ob_ptr, mb_ptr, pid - blocks_a, rows_b, D, heads_b, N, sbb, sbh, sbn,
               WIN, ROWS, MEANS, BLOCK_D, ACC)


def _launch(a: Tensor, b: Tensor, window: int | None) -> tuple[Tensor, ...]:
    a, b = (x if x.stride(-1) == 1 else x.contiguous() for x in (a, b))
    (B, Ha, N, D), Hb = a.shape, b.shape[1]
    oa = torch.empty(B, Ha, N, dtype=torch.float32, device=a.device)
    ob = torch.empty(B, Hb, N, dtype=torch.float32, device=a.device)
    win = window or BLOCK_R
    means = window is not None
    ma, mb = ((a.new_empty(B, Ha, N // win, D), b.new_empty(B, Hb, N // win, D)) if means
              else (oa, ob))
    blocks_a = cdiv(B * Ha * N, win)
    fast(_row_norms_kernel)[(blocks_a + cdiv(B * Hb * N, win),)](
        a, b, oa, ob, ma, mb, B * Ha * N, B * Hb * N, blocks_a, D, Ha, Hb, N,
        *a.stride()[:3], *b.stride()[:3], WIN=win, ROWS=MEANS_ROWS if means else BLOCK_R,
        MEANS=means,
        BLOCK_D=min(next_pow2(D), 128), ACC=accumulator(a.dtype),
        num_warps=MEANS_WARPS if means else 4)
    return (oa, ob, ma, mb) if means else (oa, ob)


def row_norms_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """fp32 row norms of ``a`` ``(B, H_a, N, D)`` and ``b`` ``(B, H_b, N, D)`` in one launch:
    ``(B, H_a, N)`` and ``(B, H_b, N)``."""
    return _launch(a, b, None)


def row_norms_and_means(a: Tensor, b: Tensor, window: int
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`row_norms_pair` and the means of ``a`` and ``b`` over aligned windows of
    ``window`` rows: ``(B, H_a, N / window, D)`` and ``(B, H_b, N / window, D)`` in their
    dtype, accumulated as the pool kernel does. Needs :func:`means_apply`."""
    if not means_apply(window, a.shape[-1]) or a.shape[2] % window:
        raise ValueError(f"window means need a window that is a multiple of {BLOCK_R} and "
                         f"divides N, and D <= 128; got window {window}, shape "
                         f"{tuple(a.shape)}")
    return _launch(a, b, window)


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
