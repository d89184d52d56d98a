"""The fast path: Triton row norms, the Triton cascade, fused pool-and-gather,
the fastest inner SDPA kernel, and the shifted scatter, with no N x D intermediate kept for
backward (only the inputs and the S-long gathered tensors).

In eager mode with the default inner kernel, gather, attention and scatter run as one autograd
node that calls cuDNN's attention ops directly (and, when deterministic, the Triton backward of
``flash_backward.py``): at 32K tokens a layer is bound by host dispatch (docs/performance.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...config import LighthouseConfig
from ..inner import (
    cudnn_applies,
    cudnn_attention,
    cudnn_attention_backward,
    fast_causal_attention,
    forward_with_lse,
    resolve_scale,
    triton_backward_applies,
)
from ..inputs import check_inner_output
from ..reference.scores import base_scores
from ..types import Gathered, Selection
from .gather_scatter import (
    gather_plan,
    pool_windows_differentiable,
    position_map,
    scatter_plan,
    spread_windows_differentiable,
)
from .one_node import Inner, one_node_layer
from .scores import means_apply, row_norms_and_means, scores_qk
from .select import select_with_map


def cudnn_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple:
    """cuDNN causal attention: ``(out, saved, sizes)``; the backward takes the last two."""
    out, lse, tensors, sizes = cudnn_attention(q, k, v, scale, causal=True)
    return out, (lse, *tensors), sizes


def _cudnn_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, saved: tuple,
                    sizes: tuple, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    return cudnn_attention_backward(dout, q, k, v, out, saved[0], saved[1:], sizes, scale,
                                    causal=True)


def _deterministic_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple:
    out, lse = forward_with_lse(q, k, v, scale)
    return out, (lse,), ()


def _deterministic_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                            saved: tuple, sizes: tuple, scale: float
                            ) -> tuple[Tensor, Tensor, Tensor]:
    from .flash_backward import causal_attention_backward

    return causal_attention_backward(dout, q, k, v, out, saved[0], scale)


def _one_node_inner(q: Tensor, k: Tensor, config: LighthouseConfig):
    """``(forward, backward)`` of the inner attention of the one-node layer, or ``None``
    where the composed path runs (compiled code, CPU, fp32/fp64, shared GQA groups)."""
    if (torch.compiler.is_compiling() or not q.is_cuda
            or q.dtype not in (torch.float16, torch.bfloat16)
            or k.shape[1] != q.shape[1] and config.gqa == "shared"):
        return None
    if config.deterministic:
        if triton_backward_applies(q):
            return _deterministic_forward, _deterministic_backward
        return None
    return (cudnn_forward, _cudnn_backward) if cudnn_applies(q) else None


class _LocalInner(Inner):
    """The single op's inner attention: one causal kernel, ``(forward, backward)`` of
    :func:`_one_node_inner`, over the gathered sequence."""

    def __init__(self, kernels: tuple, scale: float):
        self.kernels, self.scale = kernels, scale

    def forward(self, qg: Tensor, kg: Tensor, vg: Tensor) -> tuple[Tensor, list[Tensor], tuple]:
        og, saved, sizes = self.kernels[0](qg, kg, vg, self.scale)
        return og, [qg, kg, vg, og, *saved], sizes

    def backward(self, dog: Tensor, tensors: list[Tensor], sizes: tuple
                 ) -> tuple[Tensor, Tensor, Tensor]:
        qg, kg, vg, og, *saved = tensors
        return self.kernels[1](dog, qg, kg, vg, og, saved, sizes, self.scale)


def cascade_scores(q: Tensor, k: Tensor, v: Tensor | None, config: LighthouseConfig,
                   coarsest: bool = False) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The level-0 scores the cascade reads (``select_with_map``): ``sq0`` ``(B, H', N)`` and
    ``sk0`` fp32 (per kv head), and, if ``coarsest`` and the norm kernel can make them
    (``scores.means_apply``), the coarsest level of q and k, pooled while their norms are
    taken (else ``[]``)."""
    B, H, N, D = q.shape
    group = H // k.shape[1]
    means = []
    with torch.no_grad():
        if config.scorer != "norm":  # scores made in torch, the cascade on the kernel
            sq0, sk0 = base_scores(q, k, v, config)
        elif coarsest and means_apply(config.coarsest_window, D):
            sq0, sk0, *means = row_norms_and_means(q.detach(), k.detach(),
                                                   config.coarsest_window)
        else:
            sq0, sk0 = scores_qk(q.detach(), k.detach())  # key scores stay per kv head
        if config.scorer == "norm" and config.gqa == "shared":
            sq0 = sq0.view(B, H // group, group, N).amax(2)
    return sq0, sk0, means


def _select(q: Tensor, k: Tensor, v: Tensor | None, config: LighthouseConfig,
            with_selection: bool = True, coarsest: bool = False
            ) -> tuple[Selection | None, Tensor, list[Tensor]]:
    """The cascade's selection (``None`` unless ``with_selection``), its position map, and
    the coarsest means of :func:`cascade_scores`."""
    sq0, sk0, means = cascade_scores(q, k, v, config, coarsest)
    with torch.no_grad():
        return (*select_with_map(sq0, sk0, config, with_selection), means)


def select_triton(q: Tensor, k: Tensor, v: Tensor | None, config: LighthouseConfig
                  ) -> Selection:
    """Same contract and result as ``ops.api.select``, on the Triton cascade."""
    return _select(q, k, v, config)[0]


def map_and_means(q: Tensor, k: Tensor, v: Tensor | None, config: LighthouseConfig
                  ) -> tuple[Tensor, list[Tensor]]:
    """The cascade's position map (no selection written) and the coarsest means of q and k
    made while scoring (``[]`` where the norm kernel cannot): what :func:`pool_windows` reads
    to gather."""
    return _select(q, k, v, config, with_selection=False, coarsest=True)[1:]


def window_plans(q: Tensor, k: Tensor, config: LighthouseConfig) -> tuple:
    """The gather and scatter plans of these shapes."""
    H, N = q.shape[1:3]
    Hkv = k.shape[1]
    group = H // Hkv
    L, p = config.num_levels, config.pooling_factor
    shared = config.gqa == "shared"
    q_sel_div = group if shared else 1
    kv_heads, kv_div = (Hkv, 1) if shared else (H, group)
    gather = gather_plan(config.gathered_length(N), [H, kv_heads, kv_heads], [1, kv_div, kv_div],
                         p, L, sel_divs=[q_sel_div, 1, 1])
    return gather, scatter_plan(N, [H], p, L, sel_divs=[q_sel_div])


def gather_triton(q: Tensor, k: Tensor, v: Tensor, config: LighthouseConfig,
                  selection: Selection | None = None) -> Gathered:
    """The gathered ``q``, ``k``, ``v`` and their scatter on the kernels, for ``selection``,
    or the cascade's own selection when it is ``None``."""
    if selection is None:
        pos_map = _select(q, k, v, config, with_selection=False)[1]
    else:
        pos_map = position_map(selection, q.shape[2], config.pooling_factor, config.num_levels)
    gather, scatter = window_plans(q, k, config)
    qg, kg, vg = pool_windows_differentiable([q, k, v], pos_map, gather)
    return Gathered(qg, kg, vg,
                    lambda og: spread_windows_differentiable([og], pos_map, scatter,
                                                             like=[q])[0])


def lighthouse_triton(q: Tensor, k: Tensor, v: Tensor, config: LighthouseConfig,
                      scale: float | None, attn_fn, selection: Selection | None) -> Tensor:
    """``lighthouse_attention`` on the kernels; arguments already validated."""
    D = q.shape[-1]
    inner = None if attn_fn is not None else _one_node_inner(q, k, config)
    if inner is None:
        qg, kg, vg, scatter_back = gather_triton(q, k, v, config, selection)
        if attn_fn is None:
            og = fast_causal_attention(qg, kg, vg, scale, deterministic=config.deterministic)
        else:
            og = check_inner_output(attn_fn(qg, kg, vg, resolve_scale(scale, D)), qg)
        return scatter_back(og)
    coarsest = []
    if selection is None:
        _, pos_map, coarsest = _select(q, k, v, config, with_selection=False, coarsest=True)
    else:
        pos_map = position_map(selection, q.shape[2], config.pooling_factor, config.num_levels)
    return one_node_layer(q, k, v, pos_map, window_plans(q, k, config),
                          _LocalInner(inner, resolve_scale(scale, D)), coarsest)
