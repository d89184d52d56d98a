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
from .scores import row_norms_triton
from .select import select_from_base_scores
from .window import pool_op, position_map, spread_op


@torch.no_grad()
def select_triton(q: Tensor, k: Tensor, v: Tensor | None, config: LighthouseConfig
                  ) -> Selection:
    """Same contract and result as ``ops.select.select``, on the Triton cascade."""
    B, H, N, _ = q.shape
    group = H // k.shape[1]
    if config.scorer == "dilated":
        sq0, sk0 = base_scores(q, k, v, config)
    elif config.gqa == "shared":
        sq0 = row_norms_triton(q).view(B, H // group, group, N).amax(2)
        sk0 = row_norms_triton(k)
    else:
        sq0, sk0 = row_norms_triton(q), row_norms_triton(k)  # key scores stay per kv head
    return select_from_base_scores(sq0, sk0, config)


def lighthouse_triton(q: Tensor, k: Tensor, v: Tensor, config: LighthouseConfig,
                      scale: float | None, attn_fn, selection: Selection | None) -> Tensor:
    """``lighthouse_attention`` on the kernels; arguments already validated."""
    B, H, N, D = q.shape
    Hkv = k.shape[1]
    group = H // Hkv
    L, p = config.num_levels, config.pooling_factor
    if selection is None:
        selection = select_triton(q, k, v, config)
    S = selection.level.shape[2]
    pos_map = position_map(selection, N, p, L)
    shared = config.gqa == "shared"
    q_sel_div = group if shared else 1
    qg = pool_op(q, pos_map, S, H, 1, q_sel_div, False, True, p, L)
    kv_heads, kv_div = (Hkv, 1) if shared else (H, group)
    kg = pool_op(k, pos_map, S, kv_heads, kv_div, 1, False, True, p, L)
    vg = pool_op(v, pos_map, S, kv_heads, kv_div, 1, False, True, p, L)
    if attn_fn is None:
        og = fast_causal_attention(qg, kg, vg, scale, config.deterministic)
    else:
        og = attn_fn(qg, kg, vg, D**-0.5 if scale is None else scale)
    return spread_op(og, pos_map, N, H, 1, q_sel_div, True, False, p, L)
