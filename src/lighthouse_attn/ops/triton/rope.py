"""Triton twin of ``ops.rope.apply_rope_reference``: the rotation of every ``(position, head)``
row in one pass, forward and backward (the backward rotates the gradient back). Products and
sums are rounded in fp32 one by one, as the reference's separate kernels round them (no fused
multiply-add), and the result once to the input's dtype: the two agree bit for bit."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import cdiv, next_pow2

POSITIONS = 16  # per program


@triton.jit
def _rope_kernel(x_ptr, c_ptr, s_ptr, o_ptr, N, H, HALF, sxb, sxh, sxn,
                 BACK: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    bh = tl.program_id(1)
    d = tl.arange(0, BLOCK)
    m = (n < N)[:, None] & (d < HALF)[None, :]
    x = (x_ptr + (bh // H).to(tl.int64) * sxb + (bh % H).to(tl.int64) * sxh
         + n[:, None].to(tl.int64) * sxn + d[None, :])
    x1 = tl.load(x, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(x + HALF, mask=m, other=0.0).to(tl.float32)
    t = n[:, None].to(tl.int64) * HALF + d[None, :]
    c = tl.load(c_ptr + t, mask=m, other=0.0)
    s = tl.load(s_ptr + t, mask=m, other=0.0)
    if BACK:  # the adjoint: rotate back
        o1 = x1 * c + x2 * s
        o2 = x2 * c - x1 * s
    else:
        o1 = x1 * c - x2 * s
        o2 = x2 * c + x1 * s
    o = o_ptr + (bh.to(tl.int64) * N + n[:, None]) * (2 * HALF) + d[None, :]
    tl.store(o, o1.to(o_ptr.dtype.element_ty), mask=m)
    tl.store(o + HALF, o2.to(o_ptr.dtype.element_ty), mask=m)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor, back: bool) -> Tensor:
    """``x`` ``(B, H, N, D)`` (last dim contiguous) rotated into a contiguous tensor."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    B, H, N, D = x.shape
    out = torch.empty(B, H, N, D, dtype=x.dtype, device=x.device)
    _rope_kernel[(cdiv(N, POSITIONS), B * H)](
        x, cos.contiguous(), sin.contiguous(), out, N, H, D // 2, *x.stride()[:3], BACK=back,
        ROWS=POSITIONS, BLOCK=next_pow2(D // 2), num_warps=4, enable_fp_fusion=False)
    return out


class _Rope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin, back=False)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, sin, back=True), None, None


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE of ``x`` ``(B, H, N, D)`` (``D`` even; fp32, bf16 or fp16) with fp32 ``cos``,
    ``sin`` ``(N, D/2)``: a contiguous tensor in ``x``'s dtype, differentiable in ``x``."""
    if x.shape[-1] % 2 or cos.shape != (x.shape[2], x.shape[3] // 2):
        raise ValueError(f"RoPE needs an even head dim and tables of shape (N, D/2) = "
                         f"{(x.shape[2], x.shape[3] // 2)}; got x {tuple(x.shape)}, "
                         f"cos {tuple(cos.shape)}")
    return _Rope.apply(x, cos, sin)
