"""The sharded Lighthouse layer on the Triton kernels: the single op's one autograd node
(``ops/triton/one_node.py``) with the inner attention of a rank's two chunks
(``gathered.py``) and the scatter's spill carried to the next chunk (``spill.py``): the pool
kernel writes the gathered keys and values straight into the piece the inner attention
all-gathers, and the spread kernel writes each chunk's spill as its tail.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.triton.gather_scatter import WindowPlan, layout_of
from ..ops.triton.one_node import Inner, one_node_layer
from .gathered import InnerContext, inner_backward, inner_forward
from .layout import as_batch
from .spill import add_incoming, tail_grad


def batch_strides(x: Tensor) -> tuple[int, ...]:
    """Strides for a new tensor shaped like ``x`` ``(B, H, 2n, D)`` of which
    ``layout.as_batch`` is a view: ``x``'s own (``layout_of``) where that holds, else ``(B, 2n,
    H, D)`` order in memory (a projection's output seen as ``(B, H, N, D)``)."""
    B, H, N, D = x.shape
    strides = layout_of(x) or (H * N * D, N * D, D, 1)
    return strides if B == 1 or strides[0] == N * strides[2] else (N * H * D, D, H * D, 1)


class _ShardedInner(Inner):
    """A rank's two chunks, seen as batch rows, over every earlier chunk's gathered keys and
    values, the spill exchanged with the neighbouring chunks unless ``exchange`` is off."""

    def __init__(self, how: InnerContext, exchange: bool):
        self.how, self.exchange, self.kv, self.spill_rows = how, exchange, None, 0

    def rows(self, x: Tensor) -> Tensor:
        return as_batch(x)

    def layout(self, x: Tensor) -> tuple[int, ...]:
        return batch_strides(x)

    def pooled_into(self, k: Tensor, gather: WindowPlan) -> list[Tensor | None]:
        self.kv = k.new_empty(2, k.shape[0], gather.heads[1], gather.length, k.shape[3])
        return [None, self.kv[0], self.kv[1]]

    def forward(self, qg: Tensor, kg: Tensor, vg: Tensor) -> tuple[Tensor, list[Tensor], tuple]:
        kv, self.kv = self.kv, None  # kg, vg are its halves
        return inner_forward(qg, kv, self.how)

    def backward(self, dog: Tensor, tensors: list[Tensor], state: tuple
                 ) -> tuple[Tensor, Tensor, Tensor]:
        return inner_backward(dog, tensors, state, self.how)

    def spill_buffer(self, og: Tensor, gather: WindowPlan) -> Tensor | None:
        if not self.exchange:
            return None
        self.spill_rows = gather.pooling_factor ** (gather.num_levels - 1) - 1
        acc = torch.promote_types(og.dtype, torch.float32)
        return og.new_empty(og.shape[0], og.shape[1], self.spill_rows, og.shape[3], dtype=acc)

    def add_spill(self, out: Tensor, tail: Tensor) -> None:
        add_incoming(out, tail, self.how.group, self.how.rank, self.how.world)

    def spill_grad(self, dout: Tensor) -> Tensor | None:
        if not self.spill_rows:
            return None
        return tail_grad(dout, self.spill_rows, self.how.group, self.how.rank, self.how.world)


def sharded_layer(q: Tensor, k: Tensor, v: Tensor, pos_map: Tensor,
                  plans: tuple[WindowPlan, WindowPlan], how: InnerContext,
                  coarsest: list[Tensor], exchange: bool = True) -> Tensor:
    """This rank's two chunks ``q`` ``(B, H, 2n, D)``, ``k``, ``v`` ``(B, H_kv, 2n, D)``
    through gather, inner attention and scatter by the position map ``pos_map`` and the
    ``(gather, scatter)`` plans of their batch rows ``(b, slot)`` (``layout.as_batch``), the
    spill exchanged unless ``exchange`` is off: ``(B, H, 2n, D)``, laid out as ``q`` where its
    batch rows are a view (:func:`batch_strides`), with gradients to ``q``, ``k``, ``v``
    likewise. ``coarsest``: the coarsest means of ``q`` and ``k`` from the scores, or
    ``[]``. The batch-row views are taken inside the node, so no autograd node is made for
    them."""
    return one_node_layer(q, k, v, pos_map, plans, _ShardedInner(how, exchange), coarsest)
