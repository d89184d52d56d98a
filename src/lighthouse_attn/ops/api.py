"""The public entry points, :func:`lighthouse_attention` (a drop-in for causal SDPA) and
:func:`select`: input validation, the short-sequence fallback, and the one place that sends a
call to the torch reference path (``reference/``) or the Triton kernels (``triton/``)."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..config import LighthouseConfig
from .backend import resolve_backend
from .inner import resolve_scale, sdpa_causal
from .inputs import check_inner_output, check_inputs, check_selection
from .reference.attention import lighthouse_reference
from .reference.select import select_reference
from .types import AttnFn, Selection

_warned_short: set[tuple] = set()


def _dense_fallback(q: Tensor, k: Tensor, v: Tensor, config: LighthouseConfig,
                    scale: float | None, attn_fn: AttnFn | None) -> Tensor:
    N = q.shape[2]
    key = (config, N)
    if key not in _warned_short:
        _warned_short.add(key)
        warnings.warn(f"lighthouse_attention: seq_len {N} is shorter than the budget needs "
                      f"({config.min_seq_len} for L={config.num_levels}, "
                      f"p={config.pooling_factor}, topk={config.topk}); using dense causal "
                      "attention (short_seq='dense')", stacklevel=3)
    if attn_fn is None:
        return sdpa_causal(q, k, v, scale)
    return check_inner_output(attn_fn(q, k, v, resolve_scale(scale, q.shape[-1])),
                              q)


def lighthouse_attention(q: Tensor, k: Tensor, v: Tensor,
                         config: LighthouseConfig | None = None, *,
                         scale: float | None = None, attn_fn: AttnFn | None = None,
                         selection: Selection | None = None) -> Tensor:
    """Lighthouse attention: a drop-in for
    ``F.scaled_dot_product_attention(q, k, v, is_causal=True)`` at long context.

    Args:
        q: ``(B, H, N, D)`` queries (after RoPE), fp16, bf16, fp32 or fp64.
        k, v: ``(B, H_kv, N, D)`` with ``H % H_kv == 0``; same dtype and device as ``q``
            (under autocast all three are cast to its dtype first, as for SDPA).
        config: :class:`LighthouseConfig`; defaults to the paper's (L=3, p=4, K=1536, norm).
        scale: softmax scale of the inner attention; ``1/sqrt(D)`` when ``None``.
        attn_fn: inner dense causal kernel ``attn_fn(q, k, v, scale)`` on the gathered
            ``(B, H, S, D)`` sequence (see :data:`AttnFn`). When ``None``: causal SDPA, on
            the Triton backend with the fastest SDPA kernel for the shapes (cuDNN first).
        selection: a :class:`Selection` from :func:`select` with the same config, to reuse
            instead of selecting again.

    Returns:
        ``(B, H, N, D)`` in ``q``'s dtype. Gradients flow to ``q``, ``k``, ``v`` through
        pooling, gathering, the inner attention and the scatter; the selection is constant.
        On the Triton path (eager) the output is laid out in memory as ``q`` is and each
        gradient as its input is: with the ``(B, N, H, D)`` memory of a projection viewed
        as ``(B, H, N, D)``, the transpose back to ``(B, N, H * D)`` is a view.

    Raises:
        ValueError: bad shapes, dtypes or devices; a sequence length the config rejects
            (``config.validate``); a selection that does not fit; ``backend="triton"`` where
            the kernels cannot run.
    """
    config = config or LighthouseConfig()
    if not isinstance(config, LighthouseConfig):
        raise ValueError(f"config must be a LighthouseConfig, got {type(config).__name__}")
    q, k, v = autocast_inputs(q, k, v)
    check_inputs(q, k, v)
    N = q.shape[2]
    if config.short_seq == "dense" and config.is_short(N):
        return _dense_fallback(q, k, v, config, scale, attn_fn)
    config.validate(N)
    if selection is not None:
        check_selection(selection, q, k, config)
    return run_unchecked(q, k, v, config, scale=scale, attn_fn=attn_fn, selection=selection)


def autocast_inputs(q: Tensor, k: Tensor, v: Tensor | None
                    ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Cast ``q``, ``k``, ``v`` to the autocast dtype where autocast is on for their device, as
    autocast does for ``scaled_dot_product_attention`` (fp64 and non-tensors pass unchanged).
    Models that normalise q and k in fp32 (QK-norm) hand over mixed dtypes otherwise."""
    if not isinstance(q, Tensor) or not torch.is_autocast_enabled(q.device.type):
        return q, k, v
    dtype = torch.get_autocast_dtype(q.device.type)

    def cast(x: Tensor | None) -> Tensor | None:
        if isinstance(x, Tensor) and x.is_floating_point() and x.dtype != torch.float64:
            return x.to(dtype)
        return x

    return cast(q), cast(k), cast(v)


def run_unchecked(q: Tensor, k: Tensor, v: Tensor, config: LighthouseConfig,
                scale: float | None = None, attn_fn: AttnFn | None = None,
                selection: Selection | None = None) -> Tensor:
    """:func:`lighthouse_attention` without its checks, for callers inside the library that
    have checked the inputs and made ``selection`` themselves with :func:`select` (the checks
    of a hand-made selection synchronise with the GPU: a cost on every layer of every step)."""
    if resolve_backend(config, q) == "triton":
        from .triton.attention import lighthouse_triton

        return lighthouse_triton(q, k, v, config, scale, attn_fn, selection)
    if selection is None:
        selection = select_reference(q, k, v, config)
    return lighthouse_reference(q, k, v, config, scale, attn_fn, selection)


def select(q: Tensor, k: Tensor, config: LighthouseConfig | None = None, *,
           v: Tensor | None = None) -> Selection:
    """Select the gathered entries for ``q`` ``(B, H, N, D)`` and ``k`` ``(B, H_kv, N, D)``.

    Returns a :class:`Selection` of shape ``(B, H', S)`` with ``H' = H`` (``gqa="expand"``) or
    ``H_kv`` (``gqa="shared"``), computed without gradient. The ``dilated`` scorer also needs
    ``v``. Runs on the Triton cascade where ``config.backend`` resolves to it. Raises
    ``ValueError`` for invalid shapes or a sequence length the config rejects.
    """
    config = config or LighthouseConfig()
    q, k, v = autocast_inputs(q, k, v)
    check_inputs(q, k, k if v is None else v)
    config.validate(q.shape[2])
    if config.scorer == "dilated" and v is None:
        raise ValueError("the dilated scorer needs v: call select(q, k, config, v=v)")
    if resolve_backend(config, q) == "triton":
        from .triton.attention import select_triton

        return select_triton(q, k, v, config)
    with torch.no_grad():
        return select_reference(q, k, v, config)
