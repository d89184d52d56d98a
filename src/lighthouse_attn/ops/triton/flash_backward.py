"""Deterministic backward of causal attention (FlashAttention-2 style, no float atomics).

Given the forward's output ``o`` and softmax statistics ``lse`` (natural-log logsumexp of the
scaled scores), :func:`causal_attention_backward` recomputes the probabilities block by block:

    P = exp(scale * Q K^T - lse)   (causal: query i sees keys j <= i)
    dV = P^T dO,  dP = dO V^T,  dS = P * (dP - delta),  delta = rowsum(O * dO)
    dQ = scale * dS K,  dK = scale * dS^T Q

in three kernels: ``_delta_kernel`` (delta, and lse in base 2), ``_dkdv_kernel`` (one program
per key block and key/value head: it loads K, V once and walks the query blocks at and after
the diagonal of every query head of its group, accumulating dK, dV in fp32 registers) and
``_dq_kernel`` (one program per query block and head: it loads Q, dO once and walks the key
blocks up to the diagonal). Every output element is written by exactly one program that sums
in a fixed order, so the gradients are bitwise reproducible. Only the diagonal blocks are
masked. Tiles move through TMA tensor descriptors, which also zero-fill rows past ``S``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.tools.tensor_descriptor import TensorDescriptor

from .launch import cdiv, fast

LOG2E = math.log2(math.e)


class KernelConfig(NamedTuple):
    """Launch parameters of one kernel: rows per query block, rows per key block, warps and
    software-pipelining stages (block sizes: powers of two >= 16)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


# Defaults for Hopper (H100), {max head dim: (dkdv, dq)}, chosen from ptxas register counts
# (Triton 3.6, sm_90): no spills in the unmasked loops and, up to D = 128, one warpgroup per
# program so that two programs share an SM (<= 255 regs x 128 threads, < 114 KB shared each):
# one program's exponentials then overlap the other's matrix products. D = 128 on an H100:
# the fastest of nine configs swept (1.27-1.29x cuDNN's backward at S = 18K-98K,
# benchmarks/results/h100/flash_backward_sweep.log). fp32 (3xTF32 products) is for correctness.
DEFAULT_CONFIGS = {
    64: (KernelConfig(64, 64, 4, 3), KernelConfig(64, 64, 4, 3)),
    128: (KernelConfig(64, 64, 4, 2), KernelConfig(64, 64, 4, 2)),
    256: (KernelConfig(32, 64, 8, 2), KernelConfig(64, 32, 8, 2)),
}
FP32_CONFIGS = (KernelConfig(32, 64, 8, 2), KernelConfig(64, 32, 8, 2))
DELTA_BLOCK = 64
HEAD_DIMS = (16, 32, 64, 128, 256)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def default_configs(head_dim: int, dtype: torch.dtype) -> tuple[KernelConfig, KernelConfig]:
    """``(dkdv, dq)`` launch configs used when none are given."""
    if dtype == torch.float32:
        return FP32_CONFIGS
    return DEFAULT_CONFIGS[min(d for d in DEFAULT_CONFIGS if d >= head_dim)]


# --------------------------------------------------------------------------- kernels
# q, k, v, do, dq, dk, dv travel through TMA tensor descriptors over (B, H, S, D): rows past S
# load as zeros and are not stored. lse2 and delta are (B, H, S_PAD) fp32, zero past S; a padded
# query row (zero q, zero do, lse2 = delta = 0) adds nothing to any gradient.

@triton.jit
def _delta_kernel(o_ptr, do_ptr, lse_ptr, delta_ptr, lse2_ptr, H, S, S_PAD, sob, soh, sos,
                  sdb, sdh, sds, slb, slh, sls, BLOCK: tl.constexpr, D: tl.constexpr):
    """delta = rowsum(o * do) and lse2 = lse * log2(e), fp32 (B, H, S_PAD), zero past S."""
    start = tl.program_id(0) * BLOCK
    h = tl.program_id(1)
    b = tl.program_id(2)
    rows = start + tl.arange(0, BLOCK)
    ok = rows < S
    cols = tl.arange(0, D)
    b64, h64 = b.to(tl.int64), h.to(tl.int64)
    rows64 = rows.to(tl.int64)
    o = tl.load(o_ptr + b64 * sob + h64 * soh + rows64[:, None] * sos + cols[None, :],
                mask=ok[:, None], other=0.0).to(tl.float32)
    do = tl.load(do_ptr + b64 * sdb + h64 * sdh + rows64[:, None] * sds + cols[None, :],
                 mask=ok[:, None], other=0.0).to(tl.float32)
    lse = tl.load(lse_ptr + b64 * slb + h64 * slh + rows64 * sls, mask=ok, other=0.0)
    out = (b64 * H + h64) * S_PAD + rows
    tl.store(delta_ptr + out, tl.sum(o * do, axis=1))
    tl.store(lse2_ptr + out, lse.to(tl.float32) * 1.4426950408889634)


@triton.jit
def _dkdv_step(dk, dv, k, v, q_desc, do_desc, lse_head, delta_head, b, h, start_m, offs_n,
               qk_scale, BLOCK_M: tl.constexpr, D: tl.constexpr, CAUSAL: tl.constexpr,
               PRECISION: tl.constexpr):
    """Adds one query block's contribution to a key block's dK, dV (scores transposed:
    key rows, query columns)."""
    offs_m = start_m + tl.arange(0, BLOCK_M)
    q = q_desc.load([b, h, start_m, 0]).reshape(BLOCK_M, D)
    do = do_desc.load([b, h, start_m, 0]).reshape(BLOCK_M, D)
    lse2 = tl.load(lse_head + offs_m)
    delta = tl.load(delta_head + offs_m)
    p_t = tl.math.exp2(tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale
                       - lse2[None, :])
    if CAUSAL:
        p_t = tl.where(offs_m[None, :] >= offs_n[:, None], p_t, 0.0)
    dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=PRECISION)
    dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)
    ds_t = p_t * (dp_t - delta[None, :])
    dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _dkdv_kernel(q_desc, k_desc, v_desc, do_desc, dk_desc, dv_desc, lse2_ptr, delta_ptr, H, S,
                 S_PAD, group, qk_scale, scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 D: tl.constexpr, PRECISION: tl.constexpr):
    """dK, dV of one key block (grid axis 0, earliest = most work first), kv head, batch:
    sums over the query blocks at and after the diagonal of each query head of the group."""
    start_n = tl.program_id(0) * BLOCK_N
    hk = tl.program_id(1)
    b = tl.program_id(2)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    k = k_desc.load([b, hk, start_n, 0]).reshape(BLOCK_N, D)
    v = v_desc.load([b, hk, start_n, 0]).reshape(BLOCK_N, D)
    dk = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    # query blocks [lo, mid) straddle the diagonal and need the causal mask; [mid, S) do not
    lo = (start_n // BLOCK_M) * BLOCK_M
    mid = lo + tl.cdiv(start_n + BLOCK_N - lo, BLOCK_M) * BLOCK_M
    for g in range(group):
        h = hk * group + g
        lse_head = lse2_ptr + (b.to(tl.int64) * H + h) * S_PAD
        delta_head = delta_ptr + (b.to(tl.int64) * H + h) * S_PAD
        for start_m in range(lo, tl.minimum(mid, S), BLOCK_M):
            dk, dv = _dkdv_step(dk, dv, k, v, q_desc, do_desc, lse_head, delta_head, b, h,
                                start_m, offs_n, qk_scale, BLOCK_M, D, True, PRECISION)
        for start_m in range(mid, S, BLOCK_M):
            dk, dv = _dkdv_step(dk, dv, k, v, q_desc, do_desc, lse_head, delta_head, b, h,
                                start_m, offs_n, qk_scale, BLOCK_M, D, False, PRECISION)
    dk_desc.store([b, hk, start_n, 0], (dk * scale).to(dk_desc.dtype).reshape(1, 1, BLOCK_N, D))
    dv_desc.store([b, hk, start_n, 0], dv.to(dv_desc.dtype).reshape(1, 1, BLOCK_N, D))


@triton.jit
def _dq_step(dq, q, do, lse2, delta, k_desc, v_desc, b, hk, start_n, offs_m, qk_scale,
             BLOCK_N: tl.constexpr, D: tl.constexpr, CAUSAL: tl.constexpr,
             PRECISION: tl.constexpr):
    """Adds one key block's contribution to a query block's dQ."""
    k = k_desc.load([b, hk, start_n, 0]).reshape(BLOCK_N, D)
    v = v_desc.load([b, hk, start_n, 0]).reshape(BLOCK_N, D)
    p = tl.math.exp2(tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
                     - lse2[:, None])
    if CAUSAL:  # also hides the zero keys past S: they follow every query
        offs_n = start_n + tl.arange(0, BLOCK_N)
        p = tl.where(offs_m[:, None] >= offs_n[None, :], p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
    ds = p * (dp - delta[:, None])
    return tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)


@triton.jit
def _dq_kernel(q_desc, k_desc, v_desc, do_desc, dq_desc, lse2_ptr, delta_ptr, H, S, S_PAD,
               group, qk_scale, scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               D: tl.constexpr, PRECISION: tl.constexpr):
    """dQ of one query block (grid axis 0, last = most work first), head, batch: sums over
    the key blocks up to the diagonal."""
    start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    h = tl.program_id(1)
    b = tl.program_id(2)
    hk = h // group
    offs_m = start_m + tl.arange(0, BLOCK_M)
    q = q_desc.load([b, h, start_m, 0]).reshape(BLOCK_M, D)
    do = do_desc.load([b, h, start_m, 0]).reshape(BLOCK_M, D)
    stats = (b.to(tl.int64) * H + h) * S_PAD + offs_m
    lse2 = tl.load(lse2_ptr + stats)
    delta = tl.load(delta_ptr + stats)
    dq = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    # key blocks before `mid` lie wholly below the diagonal: no mask
    mid = (start_m // BLOCK_N) * BLOCK_N
    for start_n in range(0, mid, BLOCK_N):
        dq = _dq_step(dq, q, do, lse2, delta, k_desc, v_desc, b, hk, start_n, offs_m,
                      qk_scale, BLOCK_N, D, False, PRECISION)
    for start_n in range(mid, tl.minimum(start_m + BLOCK_M, S), BLOCK_N):
        dq = _dq_step(dq, q, do, lse2, delta, k_desc, v_desc, b, hk, start_n, offs_m,
                      qk_scale, BLOCK_N, D, True, PRECISION)
    dq_desc.store([b, h, start_m, 0], (dq * scale).to(dq_desc.dtype).reshape(1, 1, BLOCK_M, D))


# --------------------------------------------------------------------------- launcher

def _check(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q, k, v must be 4-D (B, H, S, D); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}")
    B, H, S, D = q.shape
    Hkv = k.shape[1]
    if min(B, H, S) < 1:
        raise ValueError(f"q must be non-empty (B, H, S >= 1); got {tuple(q.shape)}")
    if k.shape != (B, Hkv, S, D) or v.shape != k.shape or H % Hkv:
        raise ValueError(f"k and v must be (B, H_kv, S, D) with H % H_kv == 0 and the same S "
                         f"as q (causal self-attention); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if o.shape != q.shape or do.shape != q.shape:
        raise ValueError(f"o and do must have q's shape {tuple(q.shape)}; got "
                         f"{tuple(o.shape)} and {tuple(do.shape)}")
    if lse.shape != (B, H, S):
        raise ValueError(f"lse must be (B, H, S) = {(B, H, S)}; got {tuple(lse.shape)}")
    if D not in HEAD_DIMS:
        raise ValueError(f"head dim must be a power of two in {HEAD_DIMS}; got {D} "
                         "(pad the head dim to the next power of two)")
    if q.dtype not in DTYPES or any(x.dtype != q.dtype for x in (k, v, o, do)):
        raise ValueError(f"q, k, v, o, do must share one dtype out of fp16, bf16, fp32; got "
                         f"{[x.dtype for x in (q, k, v, o, do)]}")
    if len({x.device for x in (q, k, v, o, do, lse)}) != 1:
        raise ValueError("all tensors must be on one device")


def _config_ok(cfg: KernelConfig, name: str) -> None:
    for field in ("block_m", "block_n"):
        n = getattr(cfg, field)
        if n < 16 or n & (n - 1):
            raise ValueError(f"{name}.{field} must be a power of two >= 16; got {n}")


def _tma_ready(x: Tensor) -> Tensor:
    """``x`` if a TMA descriptor can address it (16-byte aligned base and strides, unit last
    stride), else a contiguous copy."""
    size = x.element_size()
    ok = (x.stride(-1) == 1 and x.data_ptr() % 16 == 0
          and all(st * size % 16 == 0 for st in x.stride()[:-1]))
    return x if ok else x.contiguous()


def _desc(x: Tensor, rows: int) -> TensorDescriptor:
    """Descriptor over ``x`` ``(B, H, S, D)`` that moves ``rows`` x ``D`` blocks."""
    return TensorDescriptor(x, list(x.shape), list(x.stride()), [1, 1, rows, x.shape[3]])


def causal_attention_backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor,
                              lse: Tensor, scale: float, *, dkdv: KernelConfig | None = None,
                              dq: KernelConfig | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of causal attention ``o = softmax(scale * q k^T + causal mask) v``.

    Args:
        do: ``(B, H, S, D)`` gradient of the output.
        q, o: ``(B, H, S, D)`` queries and forward output.
        k, v: ``(B, H_kv, S, D)``, ``H % H_kv == 0``; query head ``h`` uses key/value head
            ``h // (H // H_kv)``.
        lse: ``(B, H, S)`` natural-log logsumexp of ``scale * q k^T`` over the visible keys
            (any float dtype, any strides).
        scale: the forward's softmax scale.
        dkdv, dq: launch configs of the two main kernels (default: :func:`default_configs`).

    q, k, v, o, do share one dtype: fp16, bf16 or fp32 (fp32 multiplies with 3xTF32 on the
    GPU, close to fp32 accuracy; it is not tuned for speed). They may have any strides with a
    contiguous last dim (other layouts are copied). Head dims: 16, 32, 64, 128, 256.
    Accumulation is fp32.

    Returns:
        ``(dq, dk, dv)`` contiguous, in the inputs' dtype; ``dk``, ``dv`` have ``H_kv`` heads
        (summed over each group's query heads in head order). Bitwise reproducible: every
        element is written once by one program that sums in a fixed order (no atomics).

    Raises:
        ValueError: shapes, dtypes, devices, head dim or block sizes out of the rules above.
    """
    _check(do, q, k, v, o, lse)
    q, k, v, do = (_tma_ready(x) for x in (q, k, v, do))
    o = o if o.stride(-1) == 1 else o.contiguous()
    B, H, S, D = q.shape
    Hkv = k.shape[1]
    dkdv_default, dq_default = default_configs(D, q.dtype)
    dkdv, dq_cfg = dkdv or dkdv_default, dq or dq_default
    _config_ok(dkdv, "dkdv")
    _config_ok(dq_cfg, "dq")
    precision = "tf32x3" if q.dtype == torch.float32 else "tf32"
    pad = max(dkdv.block_m, dq_cfg.block_m, DELTA_BLOCK)
    S_pad = cdiv(S, pad) * pad

    delta = torch.empty(B, H, S_pad, device=q.device, dtype=torch.float32)
    lse2 = torch.empty_like(delta)
    fast(_delta_kernel)[(S_pad // DELTA_BLOCK, H, B)](
        o, do, lse, delta, lse2, H, S, S_pad, *o.stride()[:3], *do.stride()[:3],
        *lse.stride(), BLOCK=DELTA_BLOCK, D=D, num_warps=4)

    grad_q = torch.empty(B, H, S, D, device=q.device, dtype=q.dtype)
    grad_k = torch.empty(B, Hkv, S, D, device=q.device, dtype=q.dtype)
    grad_v = torch.empty_like(grad_k)
    qk_scale = scale * LOG2E
    bm, bn = dkdv.block_m, dkdv.block_n
    fast(_dkdv_kernel)[(cdiv(S, bn), Hkv, B)](
        _desc(q, bm), _desc(k, bn), _desc(v, bn), _desc(do, bm), _desc(grad_k, bn),
        _desc(grad_v, bn), lse2, delta, H, S, S_pad, H // Hkv, qk_scale, scale,
        BLOCK_M=bm, BLOCK_N=bn, D=D, PRECISION=precision, num_warps=dkdv.num_warps,
        num_stages=dkdv.num_stages)
    bm, bn = dq_cfg.block_m, dq_cfg.block_n
    fast(_dq_kernel)[(cdiv(S, bm), H, B)](
        _desc(q, bm), _desc(k, bn), _desc(v, bn), _desc(do, bm), _desc(grad_q, bm), lse2,
        delta, H, S, S_pad, H // Hkv, qk_scale, scale, BLOCK_M=bm, BLOCK_N=bn, D=D,
        PRECISION=precision, num_warps=dq_cfg.num_warps, num_stages=dq_cfg.num_stages)
    return grad_q, grad_k, grad_v
