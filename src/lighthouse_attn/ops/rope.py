"""Rotary position embedding (rotate-half pairing ``i``, ``i + D/2``), as the models apply it
to queries and keys: the torch reference and the entry point, which runs the Triton twin
(``triton/rope.py``) on CUDA tensors in eager mode. Both compute in fp32 and round once to
the input's dtype, so they agree bit for bit, gradients included."""

from __future__ import annotations

import torch
from torch import Tensor

from .backend import HAS_TRITON


def apply_rope_reference(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``(B, H, N, D)`` by position: ``cos``, ``sin`` are ``(N, D/2)``."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.type_as(x)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """:func:`apply_rope_reference`, in one Triton kernel each way where it applies: CUDA
    inputs in fp32, bf16 or fp16 with fp32 tables, outside ``torch.compile`` (which fuses the
    reference itself). Eager, the reference is nine elementwise kernels, most of them passes
    over ``x`` in fp32; the twin is one."""
    if (HAS_TRITON and x.is_cuda and not torch.compiler.is_compiling()
            and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and cos.dtype == sin.dtype == torch.float32
            and cos.shape == sin.shape == (x.shape[2], x.shape[3] // 2)):
        from .triton.rope import rope

        return rope(x, cos, sin)
    return apply_rope_reference(x, cos, sin)
