"""Triton twin of ``ops.scores.row_norms``: fp32 L2 norms of rows, summed in fp64.

For fp16/bf16 rows the fp64 sum of squares is exact (whatever the summation order), so this
kernel and the torch reference agree bitwise; for fp32 rows they differ only if a rounding to
fp32 lands on a boundary.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _row_norms_kernel(x_ptr, out_ptr, n_rows, D, heads, N, sxb, sxh, sxn,
                      BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    mr = r < n_rows
    bh = r // N
    t = r % N
    base = (bh // heads).to(tl.int64) * sxb + (bh % heads).to(tl.int64) * sxh + t.to(tl.int64) * sxn
    acc = tl.zeros((BLOCK_R,), tl.float64)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        x = tl.load(x_ptr + base[:, None] + d[None, :], mask=mr[:, None] & (d < D)[None, :],
                    other=0.0).to(tl.float64)
        acc += tl.sum(x * x, axis=1)
    tl.store(out_ptr + r, tl.sqrt(acc).to(tl.float32), mask=mr)  # fp64 sqrt is IEEE-rounded


@torch.library.custom_op("lighthouse_attn::row_norms", mutates_args=())
def row_norms_triton(x: Tensor) -> Tensor:
    """``(B, H, N, D)`` -> ``(B, H, N)`` fp32 norms (an opaque op for torch.compile)."""
    B, H, N, D = x.shape
    out = torch.empty(B, H, N, dtype=torch.float32, device=x.device)
    if x.stride(-1) != 1:
        x = x.contiguous()
    block_d = min(triton.next_power_of_2(D), 128)
    block_r = 64
    _row_norms_kernel[(triton.cdiv(B * H * N, block_r),)](
        x, out, B * H * N, D, H, N, x.stride(0), x.stride(1), x.stride(2),
        BLOCK_R=block_r, BLOCK_D=block_d, num_warps=4)
    return out


@row_norms_triton.register_fake
def _(x):
    return x.new_empty(x.shape[:3], dtype=torch.float32)
