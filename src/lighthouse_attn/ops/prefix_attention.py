"""Causal attention of the last ``E`` rows of a sequence over all ``M >= E`` of its keys (a
lower-right mask: row ``i`` sees keys ``j <= M - E + i``), forward with its logsumexp and
backward as separate calls, for callers that save what they need themselves (context
parallelism: a chunk's queries over every chunk up to it).

On CUDA in fp16/bf16, cuDNN (the single op's inner kernel) where it runs the inputs: the rows
over their own last ``E`` keys (a square causal call) and over the ``M - E`` keys before them
(a call without mask), merged by their logsumexps; the backward runs both pieces' backward from
the merged output and logsumexp. Flash instead in deterministic mode or where cuDNN refuses
(flash's causal mask is lower-right when ``E != M``). On the CPU torch's CPU flash kernel with
an additive lower-right mask; elsewhere (CUDA fp32/fp64) the same math in blocks of rows with
fp32 (fp64 for fp64) accumulation.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import Tensor

from .inner import (
    cudnn_applies,
    cudnn_attention,
    cudnn_attention_backward,
    deterministic_mode,
)

_FLASH_FWD = torch.ops.aten._scaled_dot_product_flash_attention.default
_FLASH_BWD = torch.ops.aten._scaled_dot_product_flash_attention_backward.default
_CPU_FWD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
_CPU_BWD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default
_ROWS = 1024  # rows per block of the math path: (B, H, 1024, M) scores at a time
_no_flash: set[torch.device] = set()


def _flash_applies(q: Tensor) -> bool:
    D = q.shape[-1]
    return (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and D % 8 == 0
            and D <= 256 and torch.backends.cuda.flash_sdp_enabled()
            and q.device not in _no_flash)


def _pieces(k: Tensor, v: Tensor, heads: int, past: int) -> tuple[list, list]:
    """Keys and values (expanded to ``heads``, contiguous) of the square causal piece (the
    last ``M - past``) and of the ``past`` ones before it."""
    k, v = _expand(k, heads), _expand(v, heads)
    return ([k[:, :, past:].contiguous(), v[:, :, past:].contiguous()],
            [k[:, :, :past].contiguous(), v[:, :, :past].contiguous()])


def _cpu_flash_applies(q: Tensor) -> bool:
    return q.device.type == "cpu"


def _expand(k: Tensor, heads: int) -> Tensor:
    return k if k.shape[1] == heads else k.repeat_interleave(heads // k.shape[1], 1)


def _fold(dk: Tensor, kv_heads: int) -> Tensor:
    """Sum the gradient of keys repeated over each group of query heads."""
    B, H, M, D = dk.shape
    return dk if H == kv_heads else dk.view(B, kv_heads, H // kv_heads, M, D).sum(2)


def _lower_right_bias(E: int, M: int, like: Tensor) -> Tensor:
    """Additive ``(E, M)`` mask: 0 where row i sees key j (``j <= M - E + i``), else -inf."""
    hidden = torch.ones(E, M, dtype=torch.bool, device=like.device).triu(M - E + 1)
    return torch.zeros(E, M, dtype=like.dtype, device=like.device).masked_fill(
        hidden, float("-inf"))


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


def prefix_attention_forward(q: Tensor, k: Tensor, v: Tensor, scale: float,
                             deterministic: bool = False) -> tuple[Tensor, Tensor, tuple]:
    """``(out, lse, saved)`` of lower-right causal attention: ``q`` ``(B, H, E, D)``, ``k``,
    ``v`` ``(B, H_kv, M, D)`` with ``M >= E``; ``lse`` ``(B, H, E)`` natural log; ``saved``
    is what :func:`prefix_attention_backward` needs besides (which kernel ran, and its
    state). ``deterministic`` picks kernels whose backward is deterministic."""
    H, E = q.shape[1:3]
    M = k.shape[2]
    if M < E:
        raise ValueError(f"prefix attention needs at least as many keys as queries: "
                         f"{M} keys, {E} queries")
    if not deterministic and q.dtype in (torch.float16, torch.bfloat16) and cudnn_applies(q):
        own, past = _pieces(k, v, H, M - E)
        out, lse, *state = cudnn_attention(q, *own, scale, causal=True)
        lse = lse.reshape(q.shape[:3]).float()
        if M == E:
            return out, lse, ("cudnn", state, None)
        out_p, lse_p, *state_p = cudnn_attention(q, *past, scale, causal=False)
        lse_p = lse_p.reshape(q.shape[:3]).float()
        merged = torch.logaddexp(lse, lse_p)
        out = (out.float() * (lse - merged).exp().unsqueeze(-1)
               + out_p.float() * (lse_p - merged).exp().unsqueeze(-1)).to(q.dtype)
        return out, merged, ("cudnn", state, state_p)
    if _flash_applies(q):
        try:
            out, lse, cq, ck, mq, mk, seed, offset, _ = _FLASH_FWD(
                q, _expand(k, H), _expand(v, H), 0.0, True, False, scale=scale)
            return out, lse, ("flash", cq, ck, mq, mk, seed, offset)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as err:  # e.g. a GPU older than flash supports
            _no_flash.add(q.device)
            warnings.warn(f"prefix attention: the flash kernel refused the inputs ({err}); "
                          "using the math path on this device", stacklevel=2)
    if _cpu_flash_applies(q):
        bias = _lower_right_bias(E, M, q)
        out, lse = _CPU_FWD(q, _expand(k, H), _expand(v, H), 0.0, False, attn_mask=bias,
                            scale=scale)
        return out, lse, ("cpu", bias)
    acc = torch.promote_types(q.dtype, torch.float32)
    k2, v2 = _expand(k, H), _expand(v, H)
    outs, lses = [], []
    for r0 in range(0, E, _ROWS):
        probs, lse = _block_probs(q[:, :, r0:r0 + _ROWS], k2, None, M - E + r0, scale, acc)
        outs.append((probs @ v2.to(acc)).to(q.dtype))
        lses.append(lse)
    return torch.cat(outs, 2), torch.cat(lses, 2), ("math",)


def prefix_attention_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                              lse: Tensor, saved: tuple, scale: float,
                              deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` of :func:`prefix_attention_forward`, ``dk``, ``dv`` with ``k``'s heads
    (a deterministic forward never picks cuDNN, and with ``deterministic`` flash's backward
    runs in torch's deterministic mode; the CPU and math kernels are deterministic anyway).
    ``out`` and ``lse`` may be strided views (a caller's slices): the kernels get contiguous
    ones, as flash's backward reads its logsumexp as contiguous."""
    H, Hkv = q.shape[1], k.shape[1]
    kind, *state = saved
    if kind == "cudnn":
        own, past = _pieces(k, v, H, k.shape[2] - q.shape[2])
        dout, out = dout.contiguous(), out.contiguous()
        stats = lse.unsqueeze(-1).contiguous()  # cuDNN's softmax stats are (B, H, E, 1)
        dq, dk, dv = cudnn_attention_backward(dout, q, *own, out, stats, *state[0], scale,
                                              causal=True)
        if state[1] is not None:
            dq_p, dk_p, dv_p = cudnn_attention_backward(dout, q, *past, out, stats, *state[1],
                                                        scale, causal=False)
            dq, dk, dv = dq + dq_p, torch.cat([dk_p, dk], 2), torch.cat([dv_p, dv], 2)
        return dq, _fold(dk, Hkv), _fold(dv, Hkv)
    if kind == "flash":
        cq, ck, mq, mk, seed, offset = state
        with deterministic_mode() if deterministic else contextlib.nullcontext():
            dq, dk, dv = _FLASH_BWD(dout.contiguous(), q, _expand(k, H), _expand(v, H),
                                    out.contiguous(), lse.contiguous(), cq, ck, mq, mk,
                                    0.0, True, seed, offset, scale=scale)
        return dq, _fold(dk, Hkv), _fold(dv, Hkv)
    if kind == "cpu":
        dq, dk, dv = _CPU_BWD(dout.contiguous(), q, _expand(k, H), _expand(v, H), out, lse,
                              0.0, False, attn_mask=state[0], scale=scale)
        return dq, _fold(dk, Hkv), _fold(dv, Hkv)
    acc = torch.promote_types(q.dtype, torch.float32)
    k2, v2 = _expand(k, H).to(acc), _expand(v, H).to(acc)
    dqs, dk, dv = [], torch.zeros_like(k2), torch.zeros_like(v2)
    E, M = q.shape[2], k.shape[2]
    for r0 in range(0, E, _ROWS):
        rows = slice(r0, r0 + _ROWS)
        probs, _ = _block_probs(q[:, :, rows], k2, lse[:, :, rows], M - E + r0, scale, acc)
        do = dout[:, :, rows].to(acc)
        dv += probs.transpose(-1, -2) @ do
        dp = do @ v2.transpose(-1, -2)
        delta = (do * out[:, :, rows].to(acc)).sum(-1, keepdim=True)
        ds = probs * (dp - delta) * scale
        dqs.append((ds @ k2).to(q.dtype))
        dk += ds.transpose(-1, -2) @ q[:, :, rows].to(acc)
    return torch.cat(dqs, 2), _fold(dk, Hkv).to(k.dtype), _fold(dv, Hkv).to(v.dtype)
