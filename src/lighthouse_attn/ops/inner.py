"""The inner dense causal attention on the gathered sequence: plain causal SDPA
(:func:`sdpa_causal`), and for the fast path the quickest SDPA kernel for the gathered shapes,
or a deterministic one.

Deterministic mode on CUDA, fp16/bf16, head dims 16-256 (powers of two): the cuDNN forward
(deterministic; flash if cuDNN refuses the inputs) and the Triton backward of
``ops/triton/flash_backward.py``, which never uses float atomics. Other dtypes and head dims:
SDPA (flash, efficient, math) under ``torch.use_deterministic_algorithms``.
"""

from __future__ import annotations

import contextlib
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


def sdpa_causal(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """Causal ``F.scaled_dot_product_attention``; ``k``, ``v`` may have fewer heads (GQA)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                          enable_gqa=k.shape[1] != q.shape[1])


class _deterministic_mode:
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
        with torch.enable_grad(), _deterministic_mode(), \
                sdpa_kernel(DETERMINISTIC_ORDER, set_priority=True):
            ins = [x.detach().requires_grad_() for x in (q, k, v)]
            out = sdpa_causal(*ins, scale)
        ctx.graph = (ins, out)
        return out.detach()

    @staticmethod
    def backward(ctx, grad: Tensor):
        ins, out = ctx.graph
        with _deterministic_mode():
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
        o, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
            q, k, v, None, True, 0.0, True, False, scale=scale)[:2]
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


# Causal attention of the last E rows of a sequence over all M >= E of its keys (a lower-right
# mask: row i sees keys j <= M - E + i), forward with its logsumexp and backward as separate
# calls, for callers that save what they need themselves (context parallelism). Flash on CUDA
# in fp16/bf16 (its causal mask is lower-right when E != M); on the CPU torch's CPU flash kernel
# with an additive lower-right mask; elsewhere (CUDA fp32/fp64) the same math in blocks of rows
# with fp32 (fp64 for fp64) accumulation.
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


def prefix_attention_forward(q: Tensor, k: Tensor, v: Tensor, scale: float
                             ) -> tuple[Tensor, Tensor, tuple]:
    """``(out, lse, saved)`` of lower-right causal attention: ``q`` ``(B, H, E, D)``, ``k``,
    ``v`` ``(B, H_kv, M, D)`` with ``M >= E``; ``lse`` ``(B, H, E)`` natural log; ``saved``
    is what :func:`prefix_attention_backward` needs besides (which kernel ran, and its
    state)."""
    H, E = q.shape[1:3]
    M = k.shape[2]
    if M < E:
        raise ValueError(f"prefix attention needs at least as many keys as queries: "
                         f"{M} keys, {E} queries")
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
    (flash's backward runs in torch's deterministic mode with ``deterministic``; the other
    kernels are deterministic anyway)."""
    H, Hkv = q.shape[1], k.shape[1]
    kind, *state = saved
    if kind == "flash":
        cq, ck, mq, mk, seed, offset = state
        with _deterministic_mode() if deterministic else contextlib.nullcontext():
            dq, dk, dv = _FLASH_BWD(dout.contiguous(), q, _expand(k, H), _expand(v, H), out,
                                    lse, cq, ck, mq, mk, 0.0, True, seed, offset, scale=scale)
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
