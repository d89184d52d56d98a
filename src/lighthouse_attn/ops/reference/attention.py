"""The torch reference path: the stages of docs/spec.md composed with autograd (materialised
pyramid, gather by indexing, scatter by out-of-place scatter_add)."""

from __future__ import annotations

from torch import Tensor

from ...config import LighthouseConfig
from ..inner import resolve_scale, sdpa_causal
from ..inputs import check_inner_output
from ..types import AttnFn, Gathered, Selection
from .gather import gather
from .pyramid import build_pyramid
from .scatter import scatter, scatter_with_tail


def gather_reference(q: Tensor, k: Tensor, v: Tensor, config: LighthouseConfig,
                     selection: Selection, tail: bool = False) -> Gathered:
    """The gathered ``q``, ``k``, ``v`` of a given selection and their scatter (torch path;
    ``k``, ``v`` keep ``H_kv`` heads only with ``gqa="shared"``); with ``tail`` the scatter
    returns ``scatter_with_tail``'s pair (context parallelism)."""
    L, p = config.num_levels, config.pooling_factor
    H, N = q.shape[1:3]
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
    scatter_fn = scatter_with_tail if tail else scatter
    return Gathered(qg, kg, vg, lambda og: scatter_fn(og, q_sel, N, config))


def lighthouse_reference(q: Tensor, k: Tensor, v: Tensor, config: LighthouseConfig,
                         scale: float | None, attn_fn: AttnFn | None, selection: Selection
                         ) -> Tensor:
    """``lighthouse_attention`` on the torch path for a given selection (inputs validated)."""
    qg, kg, vg, scatter_back = gather_reference(q, k, v, config, selection)
    if attn_fn is None:
        og = sdpa_causal(qg, kg, vg, scale)
    else:
        og = check_inner_output(attn_fn(qg, kg, vg, resolve_scale(scale, q.shape[-1])), qg)
    return scatter_back(og)
