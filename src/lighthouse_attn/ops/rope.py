"""Rotary position embedding (rotate-half pairing ``i``, ``i + D/2``), as the models apply it
to queries and keys: the torch reference and the entry points, which run the Triton twin
(``triton/rope.py``) on CUDA tensors in eager mode. Both compute in fp32 and round once to
the input's dtype, so they agree bit for bit, gradients included."""

from __future__ import annotations

import torch
from torch import Tensor

from .backend import HAS_TRITON


def rope_tables(seq_len: int, head_dim: int, theta: float, device: torch.device,
                positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """fp32 ``cos``, ``sin`` of shape ``(n, head_dim / 2)`` for ``positions`` (int64, ``n`` of
    them), by default ``0..seq_len-1``."""
    if positions is None:
        positions = torch.arange(seq_len, device=device)
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float64)
                         / head_dim)
    angles = positions.to(device, torch.float64)[:, None] * inv_freq
    return angles.cos().float(), angles.sin().float()


def apply_rope_reference(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``(B, H, N, D)`` by position: ``cos``, ``sin`` are ``(N, D/2)``."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.type_as(x)


def rope_kernel_applies(x: Tensor, cos: Tensor, sin: Tensor) -> bool:
    """Whether the Triton twin can rotate ``x`` by these tables, wherever the kernels run: a
    dtype it takes (fp32, bf16, fp16), fp32 tables of shape ``(N, D/2)``, outside
    ``torch.compile`` (which fuses the reference itself)."""
    return (HAS_TRITON and not torch.compiler.is_compiling()
            and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and cos.dtype == sin.dtype == torch.float32
            and cos.shape == sin.shape == (x.shape[2], x.shape[3] // 2))


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """:func:`apply_rope_reference`, in one Triton kernel each way on CUDA tensors where
    :func:`rope_kernel_applies`. Eager, the reference is nine elementwise kernels, most of them
    passes over ``x`` in fp32; the twin is one."""
    if x.is_cuda and rope_kernel_applies(x, cos, sin):
        from .triton.rope import rope

        return rope(x, cos, sin)
    return apply_rope_reference(x, cos, sin)


def apply_rope_pair(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`apply_rope` of ``q`` and ``k`` (same dtype), one Triton launch for both each
    way where the kernel applies."""
    if q.is_cuda and q.dtype == k.dtype and rope_kernel_applies(q, cos, sin):
        from .triton.rope import rope_pair

        return rope_pair(q, k, cos, sin)
    return apply_rope_reference(q, cos, sin), apply_rope_reference(k, cos, sin)
