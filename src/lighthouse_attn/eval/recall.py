"""How much of the attention that matters a selection keeps: recall of dense attention mass.

For query ``t`` of one head, dense causal attention puts mass ``a_tj`` on every key ``j <= t``
(``sum_j a_tj = 1``). A selection keeps key ``j`` *exactly* when the gathered sequence holds it
as a base token (its leaf level is 0, :func:`~.selection.leaf_levels`); every other key is
covered only through a pooled entry (a mean over its window). Per head:

- ``exact`` = mean over queries ``t`` of ``sum_{j <= t, j kept exactly} a_tj``;
- ``pooled`` = ``1 - exact``: the mass on keys the selection sees only at coarse resolution.

Bounds with the same budget, tiling and cascade (:func:`oracle_selection`,
:func:`random_selection`): the oracle refines, per tile and level, the windows that receive the
most dense attention mass (summed over all queries); the random selection refines random ones.
The dense attention is computed exactly, in blocks of queries, never as an ``N x N`` matrix.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..config import LighthouseConfig
from ..ops import Selection, select
from ..ops.inner import resolve_scale
from ..ops.reference.select import select_from_scores
from .selection import leaf_levels


@torch.no_grad()
def attention_mass(q: Tensor, k: Tensor, keep: Tensor | None = None, *, block: int = 256,
                   scale: float | None = None) -> tuple[Tensor, Tensor | None]:
    """Dense causal attention of ``q`` ``(B, H, N, D)`` over ``k`` ``(B, H_kv, N, D)``,
    reduced two ways in one pass over query blocks: the mass every key receives, summed over
    queries, ``(B, H, N)``; and, for each mask of ``keep`` ``(M, B, H, N)`` (bool), the mean
    over queries of the mass on kept keys, ``(M, B, H)`` (``None`` without ``keep``). fp32
    (fp64 inputs stay fp64)."""
    B, H, N, D = q.shape
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    k = k.to(dtype).repeat_interleave(H // k.shape[1], dim=1)
    q = q.to(dtype) * resolve_scale(scale, D)
    received = torch.zeros(B, H, N, dtype=dtype, device=q.device)
    kept = None if keep is None else torch.zeros(keep.shape[:-1], dtype=dtype,
                                                 device=q.device)
    keys = torch.arange(N, device=q.device)
    for start in range(0, N, block):
        rows = torch.arange(start, min(N, start + block), device=q.device)
        logits = q[:, :, rows] @ k.transpose(-1, -2)  # (B, H, b, N)
        logits = logits.masked_fill(keys > rows[:, None], float("-inf"))
        a = logits.softmax(-1)
        received += a.sum(-2)
        if keep is not None:
            kept += torch.einsum("bhqn,mbhn->mbh", a, keep.to(dtype))
    return received, None if kept is None else kept / N


def exact_mask(selection: Selection, pooling_factor: int, heads: int) -> Tensor:
    """``(B, heads, N)`` bool: the positions a selection holds as base tokens, expanded from
    its ``H'`` selection heads to ``heads`` query heads (``gqa="shared"``: one per group)."""
    mask = leaf_levels(selection, pooling_factor) == 0
    return mask.repeat_interleave(heads // mask.shape[1], dim=1)


def _window_sums(s0: Tensor, config: LighthouseConfig) -> list[Tensor]:
    out = [s0]
    for lvl in range(1, config.num_levels):
        w = config.pooling_factor ** lvl
        out.append(s0.view(*s0.shape[:-1], s0.shape[-1] // w, w).sum(-1))
    return out


def oracle_selection(received: Tensor, config: LighthouseConfig) -> Selection:
    """The cascade of ``config`` (same budget and tiles) refining, per tile and level, the
    128 candidate windows that receive the most attention mass ``received`` ``(B, H, N)``
    (summed over their positions): one selection per query head."""
    scores = _window_sums(received.float(), config)
    return select_from_scores(scores, scores, replace(config, selection="paper",
                                                       gqa="expand"))


def random_selection(shape: tuple[int, int, int], config: LighthouseConfig,
                     generator: torch.Generator, device: torch.device | str = "cpu"
                     ) -> Selection:
    """The cascade of ``config`` refining random windows (uniform scores): ``(B, H, N)``."""
    s0 = torch.rand(shape, generator=generator).to(device)
    scores = _window_sums(s0, config)
    return select_from_scores(scores, scores, replace(config, selection="paper"))


@torch.no_grad()
def layer_recall(q: Tensor, k: Tensor, v: Tensor, config: LighthouseConfig, *,
                 seed: int = 0, block: int = 256, scale: float | None = None) -> dict:
    """Recall of dense attention mass for one layer's ``q``, ``k``, ``v`` (as its attention
    receives them): ``{"selection", "oracle", "random"}`` each with ``exact`` and ``pooled``
    (means over batch rows and heads) and ``exact_per_head`` (mean over batch rows)."""
    B, H, N, _ = q.shape
    p = config.pooling_factor
    real = exact_mask(select(q, k, config, v=v), p, H)
    gen = torch.Generator().manual_seed(seed)
    rand = exact_mask(random_selection((B, H, N), config, gen, q.device), p, H)
    received, kept = attention_mass(q, k, torch.stack([real, rand]), block=block, scale=scale)
    oracle = exact_mask(oracle_selection(received, config), p, H)
    _, kept_oracle = attention_mass(q, k, oracle[None], block=block, scale=scale)
    out = {}
    for name, value in (("selection", kept[0]), ("random", kept[1]),
                        ("oracle", kept_oracle[0])):
        per_head = value.mean(0)
        exact = per_head.mean().item()
        out[name] = {"exact": exact, "pooled": 1 - exact,
                     "exact_per_head": per_head.tolist()}
    return out
