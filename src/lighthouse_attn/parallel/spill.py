"""The scatter's spill under context parallelism (docs/spec.md section 12): the summary of
the last window of each level ``l >= 1`` of a chunk adds to the first ``p^l - 1`` positions
after the chunk, which belong to the next chunk.

:func:`spill_plan` finds those entries in a chunk's selection once (integer work, no
gradient); :func:`spill` reads them from the inner output and :func:`add_spill_grad` adds
its adjoint to the inner output's gradient, so that the inner node differentiates the spill
itself (no autograd nodes of its own).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from ..config import LighthouseConfig
from ..ops import Selection
from .layout import owner


class SpillPlan(NamedTuple):
    """Where each level's last window sits in the gathered sequence, ``at`` ``(B, H, L-1)``
    (any index where it was not gathered), ``found`` ``(B, H, L-1, 1)`` (1 or 0, in the
    accumulation dtype), and ``lands`` ``(L-1, p^(L-1) - 1)``: 1 where level ``l``'s summary
    lands on the row after the chunk."""

    at: Tensor
    found: Tensor
    lands: Tensor


@functools.lru_cache(maxsize=64)
def _level_constants(num_levels: int, pooling_factor: int, n: int, device: torch.device,
                     acc: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Levels ``1 .. L-1``, the index of each one's last window in a chunk of ``n``, and the
    rows each lands on (cached per shape and device: no launches after the first call)."""
    p, levels = pooling_factor, list(range(1, num_levels))
    rows = torch.arange(p ** (num_levels - 1) - 1)
    lands = (rows < torch.tensor([p**lv - 1 for lv in levels])[:, None]).to(acc)
    return (torch.tensor(levels, device=device),
            torch.tensor([n // p**lv - 1 for lv in levels], device=device), lands.to(device))


def spill_plan(selection: Selection, local: LighthouseConfig, n: int, heads: int,
               acc: torch.dtype) -> SpillPlan:
    """The :class:`SpillPlan` of chunks of ``n`` tokens (batch rows of ``selection``) for
    ``heads`` query heads (a shared-GQA selection is repeated over each group)."""
    level, index = selection
    levels, last, lands = _level_constants(local.num_levels, local.pooling_factor, n,
                                           level.device, acc)
    with torch.no_grad():
        hit = (level.unsqueeze(-1) == levels) & (index.unsqueeze(-1) == last)
        at, found = hit.int().argmax(2), hit.any(2)  # (B, H', L-1): at most one entry each
        if level.shape[1] != heads:
            at, found = (x.repeat_interleave(heads // level.shape[1], 1) for x in (at, found))
    return SpillPlan(at, found.unsqueeze(-1).to(acc), lands)


def spill(og: Tensor, plan: SpillPlan) -> Tensor:
    """What each chunk's scatter adds past its end, ``(B, H, p^(L-1) - 1, D)`` in the plan's
    accumulation dtype, from the inner output ``og`` ``(B, H, S, D)``."""
    B, H, _, D = og.shape
    last_out = og.gather(2, plan.at.unsqueeze(-1).expand(B, H, -1, D)).to(plan.found.dtype)
    return plan.lands.T @ (last_out * plan.found)


def add_spill_grad(dog: Tensor, dspill: Tensor, plan: SpillPlan) -> Tensor:
    """``dog`` plus the gradient that :func:`spill` sends to the inner output given
    ``dspill``, the gradient of its result (a new tensor; ``dog`` is not changed)."""
    B, H, _, D = dog.shape
    back = (plan.lands @ dspill.to(plan.found.dtype)) * plan.found
    return dog.scatter_add(2, plan.at.unsqueeze(-1).expand(B, H, -1, D), back.to(dog.dtype))


@functools.lru_cache(maxsize=64)
def _incoming_index(chunks: tuple[int, int], world: int, device: torch.device,
                    dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Which gathered spill each of ``chunks`` receives, and 0 for the sequence's first."""
    owners = [owner(max(c - 1, 0), world) for c in chunks]
    return (torch.tensor([2 * r + j for r, j in owners], device=device),
            torch.tensor([float(c > 0) for c in chunks], dtype=dtype, device=device
                         ).view(2, 1, 1, 1, 1))


def incoming_spill(spills: Tensor, chunks: tuple[int, int], world: int, dtype: torch.dtype
                   ) -> Tensor:
    """What this rank's two chunks ``chunks`` receive on their first rows, ``(2B, H,
    p^(L-1) - 1, D)`` in ``dtype`` (batch rows ``(b, slot)``), from ``spills`` ``(2W, B, H,
    p^(L-1) - 1, D)``, every chunk's spill in rank order (slot-major per rank): each chunk
    gets the previous chunk's, the sequence's first chunk nothing."""
    index, keep = _incoming_index(chunks, world, spills.device, spills.dtype)
    got = spills.index_select(0, index)
    if 0 in chunks:
        got = got * keep
    return got.to(dtype).transpose(0, 1).flatten(0, 1)


@functools.lru_cache(maxsize=64)
def head_rows(rows: int, device: torch.device) -> Tensor:
    """``arange(rows)`` on ``device`` (cached): the rows a chunk's incoming spill lands on."""
    return torch.arange(rows, device=device)
