"""Attention with its logsumexp, forward and backward as separate calls, for callers that save
what they need themselves and split the keys of the same queries into pieces (context
parallelism: a chunk over its own keys with a causal mask, and over every earlier chunk's
without one). :func:`merge` combines two pieces' outputs exactly by their logsumexps, and each
piece's backward run from the merged output and logsumexp gives that piece's share of the
gradient (the softmax weights and ``rowsum(dout * out)`` are the merged ones).

Kernels: on CUDA in fp16/bf16 cuDNN (the single op's inner kernel), or flash in deterministic
mode and where cuDNN refuses the inputs; on CUDA in fp32 the memory-efficient kernel (SDPA's
own for fp32; its bf16 outputs came out wrong in these calls on an H200 with torch 2.11, so it
runs fp32 only); on the CPU torch's CPU flash kernel; elsewhere (CUDA fp64, fp16/bf16 where
neither cuDNN nor flash applies) the same math in blocks of rows with fp32 (fp64 for fp64)
accumulation.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import Tensor

from .backend import HAS_TRITON
from .inner import (
    cudnn_applies,
    cudnn_attention,
    cudnn_attention_backward,
    deterministic_mode,
)

_FLASH_FWD = torch.ops.aten._scaled_dot_product_flash_attention.default
_FLASH_BWD = torch.ops.aten._scaled_dot_product_flash_attention_backward.default
_EFFICIENT_FWD = torch.ops.aten._scaled_dot_product_efficient_attention.default
_EFFICIENT_BWD = torch.ops.aten._scaled_dot_product_efficient_attention_backward.default
_CPU_FWD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
_CPU_BWD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default
_ROWS = 1024  # rows per block of the math path: (B, H, 1024, M) scores at a time
_no_flash: set[torch.device] = set()
_no_efficient: set[torch.device] = set()


def _flash_applies(q: Tensor) -> bool:
    D = q.shape[-1]
    return (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and D % 8 == 0
            and D <= 256 and torch.backends.cuda.flash_sdp_enabled()
            and q.device not in _no_flash)


def _efficient_applies(q: Tensor) -> bool:
    return (q.is_cuda and q.dtype == torch.float32
            and torch.backends.cuda.mem_efficient_sdp_enabled() and q.device not in _no_efficient)


def _refused(kernel: str, devices: set, q: Tensor, err: RuntimeError) -> None:
    """Note that ``kernel`` refused inputs on ``q``'s device (the math path runs there from
    now on, so it warns once per device)."""
    devices.add(q.device)
    warnings.warn(f"attention pieces: the {kernel} kernel refused the inputs ({err}); using "
                  "the math path on this device", stacklevel=3)


def _cpu_flash_applies(q: Tensor) -> bool:
    return q.device.type == "cpu"


def _expand(k: Tensor, heads: int) -> Tensor:
    """``k`` repeated over each group of query heads, rows contiguous as the kernels read."""
    return (k if k.shape[1] == heads else k.repeat_interleave(heads // k.shape[1], 1)
            ).contiguous()


def _fold(dk: Tensor, kv_heads: int) -> Tensor:
    """Sum the gradient of keys repeated over each group of query heads."""
    B, H, M, D = dk.shape
    return dk if H == kv_heads else dk.view(B, kv_heads, H // kv_heads, M, D).sum(2)


def _block_probs(q: Tensor, k: Tensor, lse: Tensor | None, first: int, scale: float,
                 acc: torch.dtype) -> tuple[Tensor, Tensor]:
    """Probabilities of a block of rows of ``q`` over ``k``, its first row seeing keys
    ``0 .. first`` and each next row one more, given ``lse`` (or their own logsumexp)."""
    M = k.shape[2]
    s = (q.to(acc) @ k.to(acc).transpose(-1, -2)) * scale
    last = first + torch.arange(q.shape[2], device=q.device)
    s = s.masked_fill(torch.arange(M, device=q.device) > last[:, None], float("-inf"))
    lse = torch.logsumexp(s, -1) if lse is None else lse
    return torch.exp(s - lse.unsqueeze(-1)), lse


def attention_forward(q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool,
                      deterministic: bool = False) -> tuple[Tensor, Tensor, tuple]:
    """``(out, lse, saved)`` of attention of ``q`` ``(B, H, E, D)`` over ``k``, ``v``
    ``(B, H_kv, M, D)``: with a square causal mask (``causal``, ``M == E``) or none. ``lse``
    ``(B, H, E)`` natural log, fp32 (fp64 for fp64); ``saved`` is what
    :func:`attention_backward` needs besides (which kernel ran, and its state).
    ``deterministic`` picks kernels whose backward is deterministic."""
    H, E = q.shape[1:3]
    if causal and k.shape[2] != E:
        raise ValueError(f"a causal piece is square: {k.shape[2]} keys for {E} queries "
                         "(attend over the earlier keys as a second piece without a mask)")
    if not deterministic and q.dtype in (torch.float16, torch.bfloat16) and cudnn_applies(q):
        out, lse, tensors, sizes = cudnn_attention(q, _expand(k, H), _expand(v, H), scale,
                                                   causal=causal)
        return out, lse.reshape(q.shape[:3]).float(), ("cudnn", tensors, sizes)
    if _flash_applies(q):
        try:
            out, lse, cq, ck, mq, mk, seed, offset, _ = _FLASH_FWD(
                q, _expand(k, H), _expand(v, H), 0.0, causal, False, scale=scale)
            return out, lse, ("flash", cq, ck, mq, mk, seed, offset)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as err:  # e.g. a GPU older than flash supports
            _refused("flash", _no_flash, q, err)
    if _efficient_applies(q):
        try:  # its logsumexp comes padded to a multiple of 32 rows; the backward wants it so
            out, lse, seed, offset = _EFFICIENT_FWD(q, _expand(k, H), _expand(v, H), None, True,
                                                    0.0, causal, scale=scale)
            return out, lse[..., :E], ("efficient", lse.shape[-1], seed, offset)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as err:
            _refused("memory-efficient", _no_efficient, q, err)
    if _cpu_flash_applies(q):
        out, lse = _CPU_FWD(q, _expand(k, H), _expand(v, H), 0.0, causal, scale=scale)
        return out, lse, ("cpu",)
    acc = torch.promote_types(q.dtype, torch.float32)
    k2, v2 = _expand(k, H), _expand(v, H)
    outs, lses = [], []
    for r0 in range(0, E, _ROWS):
        probs, lse = _block_probs(q[:, :, r0:r0 + _ROWS], k2, None,
                                  r0 if causal else k.shape[2], scale, acc)
        outs.append((probs @ v2.to(acc)).to(q.dtype))
        lses.append(lse)
    return torch.cat(outs, 2), torch.cat(lses, 2), ("math",)


def attention_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                       lse: Tensor, saved: tuple, scale: float, causal: bool,
                       deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` of :func:`attention_forward`, ``dk``, ``dv`` with ``k``'s heads, from
    ``out`` and ``lse`` (the piece's own, or merged with other pieces': then this piece's
    share). ``dout``, ``out``, ``lse`` may be strided views. A deterministic forward never
    picks cuDNN, and with ``deterministic`` flash's backward runs in torch's deterministic
    mode (the CPU and math kernels are deterministic anyway)."""
    H, Hkv = q.shape[1], k.shape[1]
    kind, *state = saved
    dout, out = dout.contiguous(), out.contiguous()
    if kind == "cudnn":  # cuDNN's softmax stats are (B, H, E, 1)
        dq, dk, dv = cudnn_attention_backward(dout, q, _expand(k, H), _expand(v, H), out,
                                              lse.unsqueeze(-1).contiguous(), *state, scale,
                                              causal=causal)
    elif kind == "flash":  # flash's backward reads its logsumexp as contiguous
        cq, ck, mq, mk, seed, offset = state
        with deterministic_mode() if deterministic else contextlib.nullcontext():
            dq, dk, dv = _FLASH_BWD(dout, q, _expand(k, H), _expand(v, H), out,
                                    lse.contiguous(), cq, ck, mq, mk, 0.0, causal, seed,
                                    offset, scale=scale)
    elif kind == "efficient":
        rows, seed, offset = state
        padded = torch.nn.functional.pad(lse, (0, rows - lse.shape[2]))
        with deterministic_mode() if deterministic else contextlib.nullcontext():
            dq, dk, dv, _ = _EFFICIENT_BWD(dout, q, _expand(k, H), _expand(v, H), None, out,
                                           padded, seed, offset, 0.0, [True, True, True, False],
                                           causal, scale=scale)
    elif kind == "cpu":
        dq, dk, dv = _CPU_BWD(dout, q, _expand(k, H), _expand(v, H), out, lse.contiguous(),
                              0.0, causal, scale=scale)
    else:
        return _math_backward(dout, q, k, v, out, lse, scale, causal)
    return dq, _fold(dk, Hkv), _fold(dv, Hkv)


def _math_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                   scale: float, causal: bool) -> tuple[Tensor, Tensor, Tensor]:
    H, Hkv = q.shape[1], k.shape[1]
    acc = torch.promote_types(q.dtype, torch.float32)
    k2, v2 = _expand(k, H).to(acc), _expand(v, H).to(acc)
    dqs, dk, dv = [], torch.zeros_like(k2), torch.zeros_like(v2)
    for r0 in range(0, q.shape[2], _ROWS):
        rows = slice(r0, r0 + _ROWS)
        probs, _ = _block_probs(q[:, :, rows], k2, lse[:, :, rows],
                                r0 if causal else k.shape[2], scale, acc)
        do = dout[:, :, rows].to(acc)
        dv += probs.transpose(-1, -2) @ do
        delta = (do * out[:, :, rows].to(acc)).sum(-1, keepdim=True)
        ds = probs * (do @ v2.transpose(-1, -2) - delta) * scale
        dqs.append((ds @ k2).to(q.dtype))
        dk += ds.transpose(-1, -2) @ q[:, :, rows].to(acc)
    return torch.cat(dqs, 2), _fold(dk, Hkv).to(k.dtype), _fold(dv, Hkv).to(v.dtype)


def merge(out: Tensor, lse: Tensor, out_2: Tensor, lse_2: Tensor) -> None:
    """Combine in place ``out``, ``lse``, the attention of some queries over some keys, with
    ``out_2``, ``lse_2``, the same queries' over other keys: both become the attention over
    the union (each weighted by its share of the softmax mass, in ``lse``'s precision). One
    Triton launch on CUDA (``triton/merge.py``), else :func:`merge_reference`."""
    if HAS_TRITON and out.is_cuda and out.stride(-1) == 1 and out_2.stride(-1) == 1:
        from .triton.merge import merge_triton

        merge_triton(out, lse, out_2, lse_2)
    else:
        merge_reference(out, lse, out_2, lse_2)


def merge_reference(out: Tensor, lse: Tensor, out_2: Tensor, lse_2: Tensor) -> None:
    """:func:`merge` in torch ops."""
    merged = torch.logaddexp(lse, lse_2)
    weight = (lse_2 - merged).exp().unsqueeze(-1)
    out.copy_(torch.lerp(out.to(weight.dtype), out_2.to(weight.dtype), weight))
    lse.copy_(merged)
