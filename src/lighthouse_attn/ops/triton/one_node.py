"""The Lighthouse layer on the kernels as one autograd node: gather (the pool kernel), an
inner attention over the gathered sequence, scatter (the spread kernel), and in the backward
their adjoints in reverse. Nothing but the inputs' pooled sequences and the inner attention's
state is kept, and no other autograd node or N-long intermediate is made, so the host issues
the layer's launches back to back (docs/performance.md).

The inner attention is an :class:`Inner`: the single op's is one causal kernel
(``attention.py``); context parallelism's runs a rank's chunks over every earlier chunk and
carries the scatter's spill to the next chunk (``parallel/fused.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .gather_scatter import (
    WindowPlan,
    contiguous_rows,
    layout_of,
    new_laid_out,
    pool_windows,
    spread_windows,
)


class Inner:
    """What runs between the gather and the scatter of :func:`one_node_layer`. Subclasses give
    :meth:`forward` and :meth:`backward`; the other hooks do nothing unless overridden."""

    def rows(self, x: Tensor) -> Tensor:
        """The ``(B, H, N, D)`` rows the kernels see of a tensor of the caller's shape (an
        input, the output, or one of their gradients): ``x`` itself. Context parallelism
        sees a rank's two chunks as batch rows. On tensors laid out by :meth:`layout` it
        must be a view (the node writes its output and gradients through it)."""
        return x

    def layout(self, x: Tensor) -> tuple[int, ...] | None:
        """Strides for the output or gradient of a tensor ``x`` of the caller's shape
        (``None``: contiguous): ``x``'s own layout (``layout_of``)."""
        return layout_of(x)

    def pooled_into(self, k: Tensor, gather: WindowPlan) -> list[Tensor | None] | None:
        """Buffers to pool ``[q, k, v]`` into (``pool_windows``'s ``into``), or ``None``."""
        return None

    def forward(self, qg: Tensor, kg: Tensor, vg: Tensor) -> tuple[Tensor, list[Tensor], object]:
        """``(og, tensors, state)``: the inner output, the tensors the backward needs (saved
        with ``save_for_backward``) and the rest of its state."""
        raise NotImplementedError

    def backward(self, dog: Tensor, tensors: list[Tensor], state: object
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """``(dqg, dkg, dvg)`` from the gradient of the inner output."""
        raise NotImplementedError

    def spill_buffer(self, og: Tensor, gather: WindowPlan) -> Tensor | None:
        """A buffer for the rows the scatter's last windows reach past the end (the spread
        kernel's ``tail``), or ``None`` to drop them."""
        return None

    def add_spill(self, out: Tensor, tail: Tensor) -> None:
        """Use the filled :meth:`spill_buffer` (in place on the output ``out``)."""

    def spill_grad(self, dout: Tensor) -> Tensor | None:
        """The gradient of the spill buffer, given the output's gradient ``dout``."""
        return None


class _OneNodeLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, pos_map, gather, scatter, inner: Inner, *coarsest):
        ctx.like = [(x.shape, inner.layout(x)) for x in (q, k, v)]
        qkv = contiguous_rows([inner.rows(x) for x in (q, k, v)])
        qg, kg, vg = pool_windows(qkv, pos_map, gather, coarsest=list(coarsest),
                                  into=inner.pooled_into(qkv[1], gather))
        og, tensors, ctx.state = inner.forward(qg, kg, vg)
        tail = inner.spill_buffer(og, gather)
        out = new_laid_out(og, *ctx.like[0])
        (out_rows,) = spread_windows([og], pos_map, scatter, tail=tail, into=[inner.rows(out)])
        if tail is not None:
            inner.add_spill(out_rows, tail)
        ctx.save_for_backward(pos_map, *tensors)
        ctx.plans = (gather.adjoint(qkv), scatter.adjoint([og]))
        ctx.inner, ctx.given = inner, len(coarsest)
        return out

    @staticmethod
    def backward(ctx, dout):
        pos_map, *tensors = ctx.saved_tensors
        gather_adjoint, scatter_adjoint = ctx.plans
        inner = ctx.inner
        (dout,) = contiguous_rows([inner.rows(dout)])
        (dog,) = pool_windows([dout], pos_map, scatter_adjoint, tail=inner.spill_grad(dout))
        dqg, dkg, dvg = inner.backward(dog, tensors, ctx.state)
        dgs = contiguous_rows([dqg, dkg, dvg])
        grads = [new_laid_out(g, *like) for g, like in zip(dgs, ctx.like)]
        spread_windows(dgs, pos_map, gather_adjoint, into=[inner.rows(g) for g in grads])
        return *grads, *(None,) * (4 + ctx.given)


def one_node_layer(q: Tensor, k: Tensor, v: Tensor, pos_map: Tensor,
                   plans: tuple[WindowPlan, WindowPlan], inner: Inner,
                   coarsest: list[Tensor]) -> Tensor:
    """Scatter (by ``plans[1]``) of ``inner``'s attention of the gather (by ``plans[0]``) of
    ``q`` ``(B, H, N, D)``, ``k``, ``v`` ``(B, H_kv, N, D)`` along the position map
    ``pos_map``, with exact gradients; the output laid out in memory as ``q``, each gradient
    as its input. ``coarsest``: the coarsest means of ``q`` and ``k`` made while scoring
    (``scores.row_norms_and_means``), or ``[]``."""
    return _OneNodeLayer.apply(q, k, v, pos_map, *plans, inner, *coarsest)
