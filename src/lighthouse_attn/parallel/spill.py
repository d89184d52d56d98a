"""The scatter's spill under context parallelism (docs/spec.md section 12): the summary of
the last window of each level ``l >= 1`` of a chunk adds to the first ``p^l - 1`` positions
after the chunk, which belong to the next chunk.

:func:`spill_plan` finds those entries in a chunk's selection once (integer work, no
gradient); :func:`spill` reads them from the inner output and :func:`add_spill_grad` adds
its adjoint to the inner output's gradient, so that the inner node differentiates the spill
itself (no autograd nodes of its own).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..config import LighthouseConfig
from ..ops import Selection

_constants: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}


class SpillPlan(NamedTuple):
    """Where each level's last window sits in the gathered sequence, ``at`` ``(B, H, L-1)``
    (any index where it was not gathered), ``found`` ``(B, H, L-1, 1)`` (1 or 0, in the
    accumulation dtype), and ``lands`` ``(L-1, p^(L-1) - 1)``: 1 where level ``l``'s summary
    lands on the row after the chunk."""

    at: Tensor
    found: Tensor
    lands: Tensor


def _level_constants(local: LighthouseConfig, n: int, device: torch.device, acc: torch.dtype
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Levels ``1 .. L-1``, the index of each one's last window in a chunk of ``n``, and the
    rows each lands on (cached per shape and device: no launches after the first call)."""
    key = (local.num_levels, local.pooling_factor, n, device, acc)
    if key not in _constants:
        p, L = local.pooling_factor, local.num_levels
        levels = list(range(1, L))
        rows = torch.arange(p ** (L - 1) - 1)
        lands = (rows < torch.tensor([p**lv - 1 for lv in levels])[:, None]).to(acc)
        _constants[key] = (torch.tensor(levels, device=device),
                           torch.tensor([n // p**lv - 1 for lv in levels], device=device),
                           lands.to(device))
    return _constants[key]


def spill_plan(selection: Selection, local: LighthouseConfig, n: int, heads: int,
               acc: torch.dtype) -> SpillPlan:
    """The :class:`SpillPlan` of chunks of ``n`` tokens (batch rows of ``selection``) for
    ``heads`` query heads (a shared-GQA selection is repeated over each group)."""
    level, index = selection
    levels, last, lands = _level_constants(local, n, level.device, acc)
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
    return torch.einsum("bhld,lr->bhrd", last_out * plan.found, plan.lands)


def add_spill_grad(dog: Tensor, dspill: Tensor, plan: SpillPlan) -> Tensor:
    """``dog`` plus the gradient that :func:`spill` sends to the inner output given
    ``dspill``, the gradient of its result (a new tensor; ``dog`` is not changed)."""
    B, H, _, D = dog.shape
    back = torch.einsum("bhrd,lr->bhld", dspill.to(plan.found.dtype), plan.lands) * plan.found
    return dog.scatter_add(2, plan.at.unsqueeze(-1).expand(B, H, -1, D), back.to(dog.dtype))
