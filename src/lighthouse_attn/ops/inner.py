"""The inner dense causal attention on the gathered sequence: plain causal SDPA
(:func:`sdpa_causal`), and for the fast path the quickest SDPA kernel for the gathered shapes,
or a deterministic one.

Deterministic mode on CUDA, fp16/bf16, head dims 16-256 (powers of two): the cuDNN forward
(deterministic; flash if cuDNN refuses the inputs) and the Triton backward of
``ops/triton/flash_backward.py``, which never uses float atomics. Other dtypes and head dims:
SDPA (flash, efficient, math) under ``torch.use_deterministic_algorithms``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from .backend import HAS_TRITON

# cuDNN first: on Hopper it is 1.6-1.9x faster than flash for long causal bf16 sequences.
FAST_ORDER = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
              SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# Flash and memory-efficient backward passes are deterministic in torch's deterministic mode;
# cuDNN is not. Used for deterministic mode where the Triton backward does not apply.
DETERMINISTIC_ORDER = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                       SDPBackend.MATH]


def resolve_scale(scale: float | None, head_dim: int) -> float:
    """The softmax scale: ``scale`` as given, else ``1/sqrt(head_dim)`` as SDPA's default."""
    return head_dim**-0.5 if scale is None else scale


_CUDNN_FWD = torch.ops.aten._scaled_dot_product_cudnn_attention.default
_CUDNN_BWD = torch.ops.aten._scaled_dot_product_cudnn_attention_backward.default
_cudnn_ok: dict[tuple, bool] = {}


def cudnn_applies(q: Tensor) -> bool:
    """Whether cuDNN's attention op runs inputs like ``q`` (probed once per dtype, head dim
    and device; the user's ``torch.backends.cuda.enable_cudnn_sdp`` is respected)."""
    if not q.is_cuda or not torch.backends.cuda.cudnn_sdp_enabled():
        return False
    key = (q.dtype, q.shape[-1], q.device)
    if key not in _cudnn_ok:
        x = torch.randn(1, 1, 128, q.shape[-1], device=q.device, dtype=q.dtype)
        try:
            _CUDNN_FWD(x, x, x, None, True, 0.0, True, False)
            _cudnn_ok[key] = True
        except RuntimeError:
            _cudnn_ok[key] = False
    return _cudnn_ok[key]


def cudnn_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None, causal: bool
                    ) -> tuple[Tensor, Tensor, tuple, tuple]:
    """cuDNN's attention op (causal: upper-left, i.e. square): the output, its softmax stats
    (the natural-log logsumexp, ``(B, H, S, 1)``), and the tensors and sizes its backward
    (:func:`cudnn_attention_backward`) takes."""
    out, lse, cq, ck, mq, mk, seed, offset, _ = _CUDNN_FWD(q, k, v, None, True, 0.0, causal,
                                                           False, scale=scale)
    return out, lse, (cq, ck, seed, offset), (mq, mk)


def cudnn_attention_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                             lse: Tensor, tensors: tuple, sizes: tuple, scale: float | None,
                             causal: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` of :func:`cudnn_attention` from ``out`` and ``lse`` (its own, or a
    merge of several calls' whose rows these keys are part of)."""
    cq, ck, seed, offset = tensors
    return _CUDNN_BWD(dout, q, k, v, out, lse, seed, offset, None, cq, ck, *sizes, 0.0, causal,
                      scale=scale)


def sdpa_causal(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """Causal ``F.scaled_dot_product_attention``; ``k``, ``v`` may have fewer heads (GQA)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                          enable_gqa=k.shape[1] != q.shape[1])


class deterministic_mode:
    """Torch's deterministic algorithms on inside the block, restored after it."""

    def __enter__(self):
        self.prev = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.prev[0], warn_only=self.prev[1])


class _DeterministicSDPA(torch.autograd.Function):
    """Causal SDPA whose forward and backward both run in torch's deterministic mode."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float | None) -> Tensor:
        with torch.enable_grad(), deterministic_mode(), \
                sdpa_kernel(DETERMINISTIC_ORDER, set_priority=True):
            ins = [x.detach().requires_grad_() for x in (q, k, v)]
            out = sdpa_causal(*ins, scale)
        ctx.graph = (ins, out)
        return out.detach()

    @staticmethod
    def backward(ctx, grad: Tensor):
        ins, out = ctx.graph
        with deterministic_mode():
            dq, dk, dv = torch.autograd.grad(out, ins, grad)
        return dq, dk, dv, None


_warned_fallback: set[str] = set()


def forward_with_lse(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Causal attention output ``(B, H, S, D)`` and its natural-log logsumexp ``(B, H, S)``
    fp32, from cuDNN, or from flash if cuDNN refuses the inputs (warned once)."""
    B, H, S, _ = q.shape
    if k.shape[1] != H:  # the forward kernels get k, v expanded to H heads
        k, v = (x.repeat_interleave(H // k.shape[1], dim=1) for x in (k, v))
    try:
        o, lse = cudnn_attention(q, k, v, scale, causal=True)[:2]
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else repr(err)
        if reason not in _warned_fallback:
            _warned_fallback.add(reason)
            warnings.warn(f"deterministic attention: cuDNN forward refused the inputs "
                          f"({reason}); using the flash forward", stacklevel=4)
        o, lse = torch.ops.aten._scaled_dot_product_flash_attention(
            q, k, v, 0.0, True, False, scale=scale)[:2]
    if lse.dim() == 4 and lse.shape[-1] == 1:  # cuDNN's softmax stats are (B, H, S, 1)
        lse = lse.squeeze(-1)
    if lse.shape != (B, H, S):
        raise RuntimeError(f"attention forward returned logsumexp of shape {tuple(lse.shape)}, "
                           f"expected {(B, H, S)}")
    return o.contiguous(), lse.float().contiguous()


@torch.library.custom_op("lighthouse_attn::causal_attention_with_lse", mutates_args=())
def _attention_with_lse_op(q: Tensor, k: Tensor, v: Tensor, scale: float
                           ) -> tuple[Tensor, Tensor]:
    return forward_with_lse(q, k, v, scale)


@_attention_with_lse_op.register_fake
def _(q, k, v, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("lighthouse_attn::causal_attention_backward", mutates_args=())
def _attention_backward_op(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor,
                           scale: float) -> tuple[Tensor, Tensor, Tensor]:
    from .triton.flash_backward import causal_attention_backward

    return causal_attention_backward(do, q, k, v, o, lse, scale)


@_attention_backward_op.register_fake
def _(do, q, k, v, o, lse, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


class _DeterministicAttention(torch.autograd.Function):
    """Causal attention with a deterministic forward (cuDNN) and backward (Triton, no float
    atomics). Both halves are opaque custom ops, so torch.compile keeps them whole."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        o, lse = _attention_with_lse_op(q, k, v, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.scale = scale
        return o

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _attention_backward_op(grad.contiguous(), q, k, v, o, lse, ctx.scale)
        return dq, dk, dv, None


def triton_backward_applies(q: Tensor) -> bool:
    D = q.shape[-1]
    return (HAS_TRITON and q.dtype in (torch.float16, torch.bfloat16)
            and 16 <= D <= 256 and D & (D - 1) == 0)


def fast_causal_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None,
                          deterministic: bool = False) -> Tensor:
    """Causal attention on ``(B, H, S, D)`` / ``(B, H_kv, S, D)`` with the fastest available
    SDPA backend (cuDNN, then flash, efficient, math), or with deterministic kernels (bitwise
    reproducible forward and backward; see the module docstring for which ones)."""
    if not q.is_cuda:
        return sdpa_causal(q, k, v, scale)
    if deterministic:
        if triton_backward_applies(q):
            return _DeterministicAttention.apply(q, k, v, resolve_scale(scale, q.shape[-1]))
        return _DeterministicSDPA.apply(q, k, v, scale)
    with sdpa_kernel(FAST_ORDER, set_priority=True):
        return sdpa_causal(q, k, v, scale)
