"""The fast path: Triton row norms, the Triton cascade, fused pool-and-gather,
the fastest inner SDPA kernel, and the shifted scatter, with no N x D intermediate kept for
backward (only the inputs and the S-long gathered tensors)."""

from __future__ import annotations

import torch
from torch import Tensor

from ...config import LighthouseConfig
from ..inner import fast_causal_attention
from ..scores import base_scores
from ..select import Selection
from .scores import scores_qk
from .select import select_with_map
from .window import gather_pooled, position_map, spread_gathered


def _select(q: Tensor, k: Tensor, v: Tensor | None, config: LighthouseConfig
            ) -> tuple[Selection, Tensor]:
    B, H, N, _ = q.shape
    group = H // k.shape[1]
    with torch.no_grad():
        if config.scorer == "dilated":
            sq0, sk0 = base_scores(q, k, v, config)
        else:
            sq0, sk0 = scores_qk(q.detach(), k.detach())  # key scores stay per kv head
            if config.gqa == "shared":
                sq0 = sq0.view(B, H // group, group, N).amax(2)
        return select_with_map(sq0, sk0, config)


def select_triton(q: Tensor, k: Tensor, v: Tensor | None, config: LighthouseConfig
                  ) -> Selection:
    """Same contract and result as ``ops.select.select``, on the Triton cascade."""
    return _select(q, k, v, config)[0]


def lighthouse_triton(q: Tensor, k: Tensor, v: Tensor, config: LighthouseConfig,
                      scale: float | None, attn_fn, selection: Selection | None) -> Tensor:
    """``lighthouse_attention`` on the kernels; arguments already validated."""
    B, H, N, D = q.shape
    Hkv = k.shape[1]
    group = H // Hkv
    L, p = config.num_levels, config.pooling_factor
    if selection is None:
        selection, pos_map = _select(q, k, v, config)
    else:
        pos_map = position_map(selection, N, p, L)
    S = selection.level.shape[2]
    shared = config.gqa == "shared"
    q_sel_div = group if shared else 1
    kv_heads, kv_div = (Hkv, 1) if shared else (H, group)
    qg, kg, vg = gather_pooled([q, k, v], pos_map, S, [H, kv_heads, kv_heads],
                               [1, kv_div, kv_div], [q_sel_div, 1, 1], False, True, p, L)
    if attn_fn is None:
        og = fast_causal_attention(qg, kg, vg, scale, config.deterministic)
    else:
        og = attn_fn(qg, kg, vg, D**-0.5 if scale is None else scale)
    return spread_gathered([og], pos_map, N, [H], [1], [q_sel_div], True, False, p, L)[0]
