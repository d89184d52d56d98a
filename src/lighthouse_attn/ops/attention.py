"""lighthouse_attention: the stages of docs/spec.md composed into one drop-in for causal SDPA."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from ..config import LighthouseConfig
from .backend import resolve_backend
from .gather import gather
from .inputs import check_inputs, check_selection
from .pyramid import build_pyramid
from .scatter import scatter
from .select import Selection, select

AttnFn = Callable[[Tensor, Tensor, Tensor, float], Tensor]
"""An inner dense causal kernel: ``attn_fn(q, k, v, scale)`` with ``q`` ``(B, H, S, D)`` and
``k``, ``v`` ``(B, H_kv, S, D)`` (``H_kv < H`` only with ``gqa="shared"``) -> ``(B, H, S, D)``."""

_warned_short: set[tuple] = set()


def sdpa_causal(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """Causal ``F.scaled_dot_product_attention``; ``k``, ``v`` may have fewer heads (GQA)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                          enable_gqa=k.shape[1] != q.shape[1])


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
    return attn_fn(q, k, v, q.shape[-1] ** -0.5 if scale is None else scale)


def lighthouse_attention(q: Tensor, k: Tensor, v: Tensor,
                         config: LighthouseConfig | None = None, *,
                         scale: float | None = None, attn_fn: AttnFn | None = None,
                         selection: Selection | None = None) -> Tensor:
    """Lighthouse attention: a drop-in for
    ``F.scaled_dot_product_attention(q, k, v, is_causal=True)`` at long context.

    Args:
        q: ``(B, H, N, D)`` queries (after RoPE), fp16, bf16, fp32 or fp64.
        k, v: ``(B, H_kv, N, D)`` with ``H % H_kv == 0``; same dtype and device as ``q``.
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

    Raises:
        ValueError: bad shapes, dtypes or devices; a sequence length the config rejects
            (``config.validate``); a selection that does not fit; ``backend="triton"`` where
            the kernels cannot run.
    """
    config = config or LighthouseConfig()
    if not isinstance(config, LighthouseConfig):
        raise ValueError(f"config must be a LighthouseConfig, got {type(config).__name__}")
    check_inputs(q, k, v)
    N = q.shape[2]
    if config.short_seq == "dense" and config.is_short(N):
        return _dense_fallback(q, k, v, config, scale, attn_fn)
    config.validate(N)
    if selection is not None:
        check_selection(selection, q, k, config)
    if resolve_backend(config, q) == "triton":
        from .triton.attention import lighthouse_triton

        return lighthouse_triton(q, k, v, config, scale, attn_fn, selection)
    if selection is None:
        selection = select(q, k, config, v=v)
    return _torch_lighthouse(q, k, v, config, scale, attn_fn, selection)


def _torch_lighthouse(q: Tensor, k: Tensor, v: Tensor, config: LighthouseConfig,
                      scale: float | None, attn_fn: AttnFn | None, selection: Selection
                      ) -> Tensor:
    """Reference path: materialised pyramid, autograd through pooling and gather."""
    L, p = config.num_levels, config.pooling_factor
    H, N, D = q.shape[1:]
    group = H // k.shape[1]
    if config.gqa == "shared":
        q_sel = Selection(*(x.repeat_interleave(group, 1) for x in selection))
        kv_sel = selection
    else:
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        q_sel = kv_sel = selection
    qg = gather(build_pyramid(q, L, p), q_sel)
    kg = gather(build_pyramid(k, L, p), kv_sel)
    vg = gather(build_pyramid(v, L, p), kv_sel)
    if attn_fn is None:
        og = sdpa_causal(qg, kg, vg, scale)
    else:
        og = attn_fn(qg, kg, vg, D**-0.5 if scale is None else scale)
    return scatter(og, q_sel, N, config)
