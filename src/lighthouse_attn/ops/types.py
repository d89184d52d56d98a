"""Types shared by the op's stages and backends; this module imports nothing of the op."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

AttnFn = Callable[[Tensor, Tensor, Tensor, float], Tensor]
"""An inner dense causal kernel: ``attn_fn(q, k, v, scale)`` with ``q`` ``(B, H, S, D)`` and
``k``, ``v`` ``(B, H_kv, S, D)`` (``H_kv < H`` only with ``gqa="shared"``) -> ``(B, H, S, D)``."""


class Gathered(NamedTuple):
    """The gathered ``q``, ``k``, ``v`` of one call (``(B, H, S, D)``, ``(B, H_kv', S, D)``)
    and ``scatter``, which takes an inner output ``(B, H, S, D)`` to the op's ``(B, H, N, D)``
    (with gradients through both stages; or to that and the scatter's tail, where the caller
    asked for it)."""

    q: Tensor
    k: Tensor
    v: Tensor
    scatter: Callable[[Tensor], Tensor | tuple[Tensor, Tensor]]


class Selection(NamedTuple):
    """The gathered entries in causal order, per batch row and selecting head.

    ``level[b, h, s]`` is the pyramid level and ``index[b, h, s]`` the level-local index ``m``
    of the ``s``-th gathered entry; both ``(B, H', S)`` int64, where ``H'`` is ``H``
    (``gqa="expand"``) or ``H_kv`` (``gqa="shared"``) and ``S`` the gathered length.
    """

    level: Tensor
    index: Tensor

    def window(self, pooling_factor: int) -> tuple[Tensor, Tensor]:
        """Base window ``[start, end)`` that each entry covers (SPEC section 1)."""
        width = torch.pow(pooling_factor, self.level)
        return self.index * width, (self.index + 1) * width

    def refined(self, pooling_factor: int) -> Tensor:
        """Bool ``(B, H', S)``: True for entries that were selected and refined (their children
        are gathered too). The other entries (base tokens and rejected coarse entries) are the
        leaves: their windows tile ``[0, N)`` exactly.

        A selected entry ``(l, m)`` comes right after its last child ``(l-1, p*m + p-1)``
        (SPEC section 4); no other entry can precede it that way.
        """
        prev_level = torch.nn.functional.pad(self.level, (1, 0), value=-1)[..., :-1]
        prev_index = torch.nn.functional.pad(self.index, (1, 0), value=-1)[..., :-1]
        last_child = pooling_factor * self.index + pooling_factor - 1
        return (self.level >= 1) & (prev_level == self.level - 1) & (prev_index == last_child)
