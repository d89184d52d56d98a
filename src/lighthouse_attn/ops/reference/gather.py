"""Gather of pooled pyramid entries into the gathered sequence (SPEC section 5)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..types import Selection


def gather(pyramid: list[Tensor], selection: Selection) -> Tensor:
    """Rows of the pyramid (level ``l``: ``(B, H', N/p^l, D)``) named by ``selection``
    (``(B, H', S)``), in its order: ``(B, H', S, D)``. Differentiable in the pyramid."""
    sizes = torch.tensor([x.shape[2] for x in pyramid], device=selection.level.device)
    offsets = torch.cumsum(sizes, 0) - sizes
    flat = torch.cat(pyramid, dim=2)
    pos = offsets[selection.level] + selection.index
    return flat.gather(2, pos.unsqueeze(-1).expand(-1, -1, -1, flat.shape[-1]))
