"""Tile-stratified coarse-to-fine selection and the causal order of the gathered sequence
(SPEC sections 3-4), in the paper's mode and the causal mode (SPEC section 11)."""

from __future__ import annotations

import torch
from torch import Tensor

from ...config import HALF, SEGMENTS, TILE, LighthouseConfig
from ..types import Selection
from .scores import base_scores, causal_level_scores, level_scores


def pick_top(sq: Tensor, sk: Tensor, index: Tensor) -> Tensor:
    """Stratified pick within each tile (SPEC section 3, step 2).

    ``sq``, ``sk``: candidate scores ``(..., C)``; ``index``: their level-local indices
    ``(..., C)``, in any order, ``C >= 128``. Returns a bool mask ``(..., C)`` with 128 True:
    ``A`` = the 64 largest ``sq``, then ``B`` = the 64 largest ``sk`` among the rest.
    Ties go to the lower index, so the result does not depend on the candidates' order.
    """
    by_index = index.argsort(dim=-1, stable=True)
    sq, sk = sq.gather(-1, by_index), sk.gather(-1, by_index)
    top_q = sq.sort(dim=-1, descending=True, stable=True).indices[..., :HALF]
    in_a = torch.zeros_like(sq, dtype=torch.bool).scatter_(-1, top_q, True)
    top_k = sk.masked_fill(in_a, float("-inf")).sort(dim=-1, descending=True, stable=True)
    chosen = in_a.scatter_(-1, top_k.indices[..., :HALF], True)
    return torch.empty_like(chosen).scatter_(-1, by_index, chosen)


def look_back(num_candidates: int) -> int:
    """Causal selection: a candidate "wants" refinement when one of its scores beats those of
    the ``look_back - 1`` candidates before it: ``ceil(2 C / 128)`` (``2p`` below the coarsest
    level), so that about ``128 / C`` of independent candidates want it."""
    return max(2, -(-2 * num_candidates // TILE))


def pick_causal(sq: Tensor, sk: Tensor) -> Tensor:
    """Causal pick within each tile (SPEC section 11): ``sq``, ``sk`` are the causal scores of
    the candidates ``(..., C)`` in ascending index order, ``C >= 128``. Returns a bool mask with
    exactly 128 True, where entry ``i`` depends on candidates ``0..i`` only.

    Candidate ``i`` wants refinement when ``sq[i]`` or ``sk[i]`` is larger than every score of
    its kind among the :func:`look_back` ``- 1`` candidates before it. The list is cut into
    ``SEGMENTS`` consecutive segments (``i`` is in segment ``16 i // C``), each refining
    exactly ``128 / SEGMENTS``: walking in order, a candidate is refined when it wants it and
    its segment has budget left, or when the segment's remaining candidates are no more than
    its remaining budget. This is the sequential rule in closed form (cumulative sums).
    """
    C = sq.shape[-1]
    g = look_back(C)

    def beats_recent(s: Tensor) -> Tensor:
        best = torch.full_like(s, float("-inf"))
        for j in range(1, min(g, C)):
            best[..., j:] = torch.maximum(best[..., j:], s[..., :-j])
        return s > best

    want = beats_recent(sq) | beats_recent(sk)
    budget = TILE // SEGMENTS
    i = torch.arange(C, device=sq.device)
    seg = SEGMENTS * i // C
    start = (seg * C + SEGMENTS - 1) // SEGMENTS  # ceil(seg C / 16): first of i's segment
    end = ((seg + 1) * C + SEGMENTS - 1) // SEGMENTS
    cum = want.long().cumsum(-1)
    before_segment = torch.where(start > 0, cum[..., (start - 1).clamp(min=0)], 0)
    wants_before = cum - want.long() - before_segment
    forced = end - i <= budget - wants_before.clamp(max=budget)
    return forced | (want & (wants_before < budget))


def position_keys(level: Tensor, index: Tensor, selected: Tensor, config: LighthouseConfig
                  ) -> Tensor:
    """Causal sort keys of SPEC section 4, scaled by ``2^L`` so they are exact integers:
    base token ``t`` -> ``t``; rejected ``(l, m)`` -> ``m p^l``; selected ``(l, m)`` ->
    ``(m+1) p^l - 2^-l``."""
    L, p = config.num_levels, config.pooling_factor
    width = torch.pow(p, level)
    start = (index * width) << L
    end_minus = (((index + 1) * width) << L) - (torch.ones_like(level) << (L - level))
    return torch.where(selected, end_minus, start)


def select_from_scores(sq: list[Tensor], sk: list[Tensor], config: LighthouseConfig
                       ) -> Selection:
    """Run the cascade on per-level scores (``sq[l]``, ``sk[l]``: ``(B, H', N/p^l)``): the
    window maxima (:func:`~.scores.level_scores`) for ``selection="paper"``, the causal scores
    (:func:`~.scores.causal_level_scores`) for ``"causal"``.

    Vectorised over batch rows, heads and tiles; loops only over levels.
    """
    L, p, T = config.num_levels, config.pooling_factor, config.num_tiles
    causal = config.selection == "causal"
    lead = sq[0].shape[:-1]
    device = sq[0].device
    if L == 1:
        n = sq[0].shape[-1]
        index = torch.arange(n, device=device).expand(*lead, n).contiguous()
        return Selection(torch.zeros_like(index), index)

    n_coarse = sq[L - 1].shape[-1]
    # candidates per tile: (*lead, T, C); at the coarsest level all of the tile's entries
    cand = torch.arange(n_coarse, device=device).view(T, n_coarse // T).expand(*lead, T, -1)
    levels, indices, selected = [], [], []
    for lvl in range(L - 1, 0, -1):
        flat = cand.reshape(*lead, -1)
        c_sq = sq[lvl].gather(-1, flat).view(cand.shape)
        c_sk = sk[lvl].gather(-1, flat).view(cand.shape)
        chosen = pick_causal(c_sq, c_sk) if causal else pick_top(c_sq, c_sk, cand)
        levels.append(torch.full_like(flat, lvl))
        indices.append(flat)
        selected.append(chosen.reshape(flat.shape))
        # the 128 chosen per tile, ascending, and their p children each
        parents = cand.masked_select(chosen).view(*lead, T, TILE)
        cand = (parents.unsqueeze(-1) * p + torch.arange(p, device=device)).flatten(-2)
    flat = cand.reshape(*lead, -1)
    levels.append(torch.zeros_like(flat))
    indices.append(flat)
    selected.append(torch.zeros_like(flat, dtype=torch.bool))

    level, index = torch.cat(levels, -1), torch.cat(indices, -1)
    keys = position_keys(level, index, torch.cat(selected, -1), config)
    order = keys.argsort(dim=-1)
    return Selection(level.gather(-1, order), index.gather(-1, order))


@torch.no_grad()
def select_reference(q: Tensor, k: Tensor, v: Tensor | None, config: LighthouseConfig
                     ) -> Selection:
    """The selection of ``ops.api.select`` on the torch path (inputs already validated)."""
    sq0, sk0 = base_scores(q, k, v, config)
    return select_from_scores(selection_scores(sq0, config), selection_scores(sk0, config),
                              config)


def selection_scores(s0: Tensor, config: LighthouseConfig) -> list[Tensor]:
    """Per-level scores the cascade of ``config.selection`` reads, from level-0 scores."""
    levels = causal_level_scores if config.selection == "causal" else level_scores
    return levels(s0, config.num_levels, config.pooling_factor)
