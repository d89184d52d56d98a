"""The sharded Lighthouse layer on the Triton kernels as one autograd node: gather (the pool
kernel), the inner attention of the two chunks (``gathered.py``), the scatter (the spread
kernel, which also writes each chunk's spill as its tail) and the spill's exchange
(``spill.py``). The backward runs the same stages' adjoints in reverse; nothing but the
chunks' inputs, their gathered sequences and the inner state is kept, and no other autograd
node or N-long intermediate is made (the host issues the step's launches back to back).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.triton.gather_scatter import (
    WindowPlan,
    contiguous_rows,
    layout_of,
    pool_windows,
    spread_windows,
)
from .gathered import InnerContext, inner_backward, inner_forward
from .spill import add_incoming, tail_grad


class _ShardedLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, pos_map, plans: tuple[WindowPlan, WindowPlan],
                how: InnerContext, exchange: bool, *coarsest):
        gather, scatter = plans
        qkv = contiguous_rows([q, k, v])
        # the gathered keys and values land in the piece the inner attention all-gathers
        kv = k.new_empty(2, k.shape[0], gather.heads[1], gather.length, k.shape[3])
        qg, _, _ = pool_windows(qkv, pos_map, gather, coarsest=list(coarsest),
                                into=[None, kv[0], kv[1]])
        og, tensors, ctx.state = inner_forward(qg, kv, how)
        rows = gather.pooling_factor ** (gather.num_levels - 1) - 1
        acc = torch.promote_types(og.dtype, torch.float32)
        tail = og.new_empty(og.shape[0], og.shape[1], rows, og.shape[3], dtype=acc)
        ctx.layouts = [layout_of(x) for x in (q, k, v)]
        (out,) = spread_windows([og], pos_map, scatter, ctx.layouts[:1], tail=tail)
        if exchange and rows:
            add_incoming(out, tail, how.group, how.rank, how.world)
        ctx.save_for_backward(pos_map, *tensors)
        ctx.plans = (gather.adjoint(qkv), scatter.adjoint([og]))
        ctx.meta = (how, exchange, rows, len(coarsest))
        return out

    @staticmethod
    def backward(ctx, dout):
        pos_map, *tensors = ctx.saved_tensors
        gather_adjoint, scatter_adjoint = ctx.plans
        how, exchange, rows, given = ctx.meta
        (dout,) = contiguous_rows([dout])
        dtail = (tail_grad(dout, rows, how.group, how.rank, how.world)
                 if exchange and rows else None)
        (dog,) = pool_windows([dout], pos_map, scatter_adjoint, tail=dtail)
        dqg, dkg, dvg = inner_backward(dog, tensors, ctx.state, how)
        dq, dk, dv = spread_windows(contiguous_rows([dqg, dkg, dvg]), pos_map, gather_adjoint,
                                    ctx.layouts)
        return dq, dk, dv, *(None,) * (4 + given)


def sharded_layer(q: Tensor, k: Tensor, v: Tensor, pos_map: Tensor,
                  plans: tuple[WindowPlan, WindowPlan], how: InnerContext,
                  coarsest: list[Tensor], exchange: bool = True) -> Tensor:
    """This rank's two chunks ``q`` ``(2B, H, n, D)``, ``k``, ``v`` ``(2B, H_kv, n, D)``
    (batch rows ``(b, slot)``) through gather, inner attention and scatter by the position
    map ``pos_map`` and the ``(gather, scatter)`` plans, the spill exchanged unless
    ``exchange`` is off: ``(2B, H, n, D)`` laid out as ``q``, with gradients to ``q``, ``k``,
    ``v`` in their layouts. ``coarsest``: the coarsest means of ``q`` and ``k`` from the
    scores, or ``[]``."""
    return _ShardedLayer.apply(q, k, v, pos_map, plans, how, exchange, *coarsest)
