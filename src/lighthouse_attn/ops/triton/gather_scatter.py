"""The memory-bound kernels behind gather and scatter: ``pool_windows`` and ``spread_windows``,
exact adjoints of each other, each launch described by a :class:`WindowPlan`.

Both walk the base sequence in aligned spans of ``ROWS`` rows (for the pool a multiple of the
coarsest window ``p^(L-1)``; a spread span may be shorter than a window and then shares its
one entry), in "u-space" ``u = t + shift``: with ``shift = 1`` the shifted window of
entry ``(l, m)``, base rows ``[(m+1) p^l - 1, (m+2) p^l - 1)``, is the aligned u-window
``m + 1``. Gathered entries are found through the inverse position map (``position_map``).

``pool_windows``: each gathered entry whose window lies in the span gets the sum (mean if ``mean``)
of its window's rows, read as one ``(entries, window, D)`` block per level (levels with no
gathered entry in the span are skipped).
    gather forward   = pool_windows([q, k, v], mean, shift 0)   (pooling fused into the gather)
    scatter backward = pool_windows([grad_out], sum, shift 1)
``spread_windows``: every base row gets, at each level, the gathered row whose window covers it
(divided by ``p^l`` if ``mean``), summed over levels in order 0 .. L-1.
    gather backward  = spread_windows([dq_g, dk_g, dv_g], mean, shift 0)
    scatter forward  = spread_windows([o], sum, shift 1)

One launch serves up to three tensors (q, k, v). No atomics: every output row is written by
exactly one program, so results are deterministic. Heads: output head ``o`` of a pool reads
input head ``o // head_div`` and selection head ``o // sel_div``; output head ``j`` of a spread
sums the ``head_div`` gathered heads ``j * head_div + i``, whose selection head is
``(j * head_div + i) // sel_div``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..types import Selection
from .launch import accumulator, cdiv, fast, next_pow2

SPREAD_ROWS = 16  # spread span (rows) for D <= 128, half that above; windows may be longer


def spread_warps(tensors: int, rows: int, D: int) -> int:
    """Warps of a spread launch over spans of ``rows`` of ``D`` columns. For spans of 16 rows
    and at most 128 columns: 1 for the backward's three tensors, else 2. Against 32-row spans
    with 2 and 4 warps (64 rows at L=4, when spans held whole windows) this cut the spread
    12-14% from 32K to 512K (L=3) and 21% at 1M (L=4) inside the layer on an H200
    (benchmarks/results/h200/window_kernel_variants_spread*.json). Other spans: 2 warps for
    three tensors up to 32 rows, else 4 (H100, benchmarks/results/h100/stage_variants.json)."""
    if rows <= 16 and D <= 128:
        return 1 if tensors == 3 else 2
    return 2 if tensors == 3 and rows <= 32 else 4


# The pool's span (rows) for D <= 128, half that above, at least the coarsest window; it skips
# the levels absent from a span. Inside the layer on an H200, 64 rows with 2 warps beat 128
# rows with 4 at every length timed: the pool took 5-6% less at 32K (K=512), 128K (K=2048)
# and 512K (K=2048), 26% less at 1M (L=4, K=4096)
# (benchmarks/results/h200/window_kernel_variants_pool_*.json).
POOL_ROWS = 64
POOL_WARPS = 2


@triton.jit
def _pool_one(x_ptr, out_ptr, map_ptr, c_ptr, tail_ptr, b, o, N, M, S, D, heads, x_div,
              sel_div, sel_heads, c_heads, sxb, sxh, sxn, stb, sth, u0, SHIFT: tl.constexpr,
              MEAN: tl.constexpr, L: tl.constexpr, P: tl.constexpr, LOG2P: tl.constexpr,
              ROWS: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
              GIVEN: tl.constexpr, TAIL: tl.constexpr):
    d = tl.arange(0, BLOCK_D)
    md = d < D
    x_base = x_ptr + b.to(tl.int64) * sxb + (o // x_div).to(tl.int64) * sxh
    tail_base = tail_ptr + b.to(tl.int64) * stb + (o // x_div).to(tl.int64) * sth
    map_row = map_ptr + (b * sel_heads + o // sel_div).to(tl.int64) * M
    out_base = out_ptr + ((b * heads + o).to(tl.int64) * S) * D
    level_off = 0
    for lvl in tl.static_range(L):
        m = (u0 >> (lvl * LOG2P)) + tl.arange(0, ROWS // (P**lvl)) - SHIFT
        n_lvl = N >> (lvl * LOG2P)
        ok = (m >= 0) & (m < n_lvl)
        s = tl.load(map_row + level_off + m, mask=ok, other=-1)
        if GIVEN and lvl == L - 1:  # the coarsest level's means, made by the norm kernel
            ok = ok & (s >= 0)
            c_row = (b * c_heads + o // x_div).to(tl.int64) * n_lvl + m
            val = tl.load(c_ptr + c_row[:, None] * D + d[None, :],
                          mask=ok[:, None] & md[None, :], other=0.0)
            tl.store(out_base + s[:, None].to(tl.int64) * D + d[None, :], val,
                     mask=ok[:, None] & md[None, :])
        elif tl.max(s, 0) >= 0:  # any entry of this level in the span
            ok = ok & (s >= 0)
            t = (u0 + tl.arange(0, ROWS // (P**lvl))[:, None] * (P**lvl)
                 + tl.arange(0, P**lvl)[None, :] - SHIFT)
            mt = ok[:, None] & (t >= 0) & (t < N)
            x = tl.load(x_base + t[:, :, None].to(tl.int64) * sxn + d[None, None, :],
                        mask=mt[:, :, None] & md[None, None, :], other=0.0).to(ACC)
            if TAIL:  # rows N .. N + TAIL - 1 come from the tail
                mt = ok[:, None] & (t >= N) & (t < N + TAIL)
                x += tl.load(tail_base + (t - N)[:, :, None].to(tl.int64) * D
                             + d[None, None, :], mask=mt[:, :, None] & md[None, None, :],
                             other=0.0).to(ACC)
            val = tl.sum(x, axis=1)
            if MEAN:
                val = val * (1.0 / (P**lvl))
            tl.store(out_base + s[:, None].to(tl.int64) * D + d[None, :],
                     val.to(out_ptr.dtype.element_ty), mask=ok[:, None] & md[None, :])
        level_off += n_lvl


@triton.jit
def _pool_kernel(x0, x1, x2, o0, o1, o2, c0, c1, c2, tail, map_ptr, N, M, S, D, h0, h1, h2,
                 xd0, xd1, xd2, sd0, sd1, sd2, ch0, ch1, ch2, sel_heads, s0b, s0h, s0n, s1b,
                 s1h, s1n, s2b, s2h, s2n, stb, sth, SHIFT: tl.constexpr, MEAN: tl.constexpr,
                 L: tl.constexpr, P: tl.constexpr, LOG2P: tl.constexpr, ROWS: tl.constexpr,
                 BLOCK_D: tl.constexpr, ACC: tl.constexpr, GIVEN: tl.constexpr,
                 TAIL: tl.constexpr):
    u0 = tl.program_id(0) * ROWS
    pid_y = tl.program_id(1)
    total = h0 + h1 + h2
    b = pid_y // total
    slot = pid_y % total
    if slot < h0:
        _pool_one(x0, o0, map_ptr, c0, tail, b, slot, N, M, S, D, h0, xd0, sd0, sel_heads, ch0,
                  s0b, s0h, s0n, stb, sth, u0, SHIFT, MEAN, L, P, LOG2P, ROWS, BLOCK_D, ACC,
                  GIVEN > 0, TAIL)
    elif slot < h0 + h1:
        _pool_one(x1, o1, map_ptr, c1, tail, b, slot - h0, N, M, S, D, h1, xd1, sd1, sel_heads,
                  ch1, s1b, s1h, s1n, stb, sth, u0, SHIFT, MEAN, L, P, LOG2P, ROWS, BLOCK_D,
                  ACC, GIVEN > 1, 0)
    else:
        _pool_one(x2, o2, map_ptr, c2, tail, b, slot - h0 - h1, N, M, S, D, h2, xd2, sd2,
                  sel_heads, ch2, s2b, s2h, s2n, stb, sth, u0, SHIFT, MEAN, L, P, LOG2P, ROWS,
                  BLOCK_D, ACC, GIVEN > 2, 0)


@triton.jit
def _spread_one(g_ptr, out_ptr, tail_ptr, map_ptr, b, j, N, M, D, group, sel_div, sel_heads,
                sgb, sgh, sgs, sob, soh, son, stb, sth, u0, SHIFT: tl.constexpr,
                MEAN: tl.constexpr, L: tl.constexpr, P: tl.constexpr, LOG2P: tl.constexpr,
                ROWS: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
                TAIL: tl.constexpr):
    d = tl.arange(0, BLOCK_D)
    md = d < D
    acc = tl.zeros((ROWS, BLOCK_D), ACC)
    for i in range(group):
        g_head = j * group + i
        map_row = map_ptr + (b * sel_heads + g_head // sel_div).to(tl.int64) * M
        g_base = g_ptr + b.to(tl.int64) * sgb + g_head.to(tl.int64) * sgh
        level_off = 0
        for lvl in tl.static_range(L):
            # the span holds ceil(ROWS / p^lvl) entries of this level: one, shared by all its
            # rows, where the window is longer than the span
            m = (u0 >> (lvl * LOG2P)) + tl.arange(0, (ROWS + P**lvl - 1) // (P**lvl)) - SHIFT
            ok = (m >= 0) & (m < (N >> (lvl * LOG2P)))
            s = tl.load(map_row + level_off + m, mask=ok, other=-1)
            ok = ok & (s >= 0)
            rows = tl.load(g_base + s[:, None].to(tl.int64) * sgs + d[None, :],
                           mask=ok[:, None] & md[None, :], other=0.0).to(ACC)
            if MEAN:
                rows = rows * (1.0 / (P**lvl))
            if lvl == 0:
                acc += rows
            else:
                acc += tl.reshape(tl.broadcast_to(
                    rows[:, None, :],
                    ((ROWS + P**lvl - 1) // (P**lvl), ROWS // ((ROWS + P**lvl - 1) // (P**lvl)),
                     BLOCK_D)), (ROWS, BLOCK_D))
            level_off += N >> (lvl * LOG2P)
    t = u0 + tl.arange(0, ROWS) - SHIFT
    out = out_ptr + b.to(tl.int64) * sob + j.to(tl.int64) * soh + t[:, None].to(tl.int64) * son
    tl.store(out + d[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=((t >= 0) & (t < N))[:, None] & md[None, :])
    if TAIL:  # rows N .. N + TAIL - 1, past the end, go to the tail
        tail = (tail_ptr + b.to(tl.int64) * stb + j.to(tl.int64) * sth
                + (t - N)[:, None].to(tl.int64) * D)
        tl.store(tail + d[None, :], acc.to(tail_ptr.dtype.element_ty),
                 mask=((t >= N) & (t < N + TAIL))[:, None] & md[None, :])


@triton.jit
def _spread_kernel(g0, g1, g2, o0, o1, o2, tail, map_ptr, N, M, D, h0, h1, h2, gr0, gr1, gr2,
                   sd0, sd1, sd2, sel_heads, s0b, s0h, s0s, s1b, s1h, s1s, s2b, s2h, s2s,
                   t0b, t0h, t0n, t1b, t1h, t1n, t2b, t2h, t2n, stb, sth, SHIFT: tl.constexpr,
                   MEAN: tl.constexpr, L: tl.constexpr, P: tl.constexpr, LOG2P: tl.constexpr,
                   ROWS: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
                   TAIL: tl.constexpr):
    u0 = tl.program_id(0) * ROWS
    pid_y = tl.program_id(1)
    total = h0 + h1 + h2
    b = pid_y // total
    slot = pid_y % total
    if slot < h0:
        _spread_one(g0, o0, tail, map_ptr, b, slot, N, M, D, gr0, sd0, sel_heads, s0b, s0h,
                    s0s, t0b, t0h, t0n, stb, sth, u0, SHIFT, MEAN, L, P, LOG2P, ROWS, BLOCK_D,
                    ACC, TAIL)
    elif slot < h0 + h1:
        _spread_one(g1, o1, tail, map_ptr, b, slot - h0, N, M, D, gr1, sd1, sel_heads, s1b,
                    s1h, s1s, t1b, t1h, t1n, stb, sth, u0, SHIFT, MEAN, L, P, LOG2P, ROWS,
                    BLOCK_D, ACC, 0)
    else:
        _spread_one(g2, o2, tail, map_ptr, b, slot - h0 - h1, N, M, D, gr2, sd2, sel_heads,
                    s2b, s2h, s2s, t2b, t2h, t2n, stb, sth, u0, SHIFT, MEAN, L, P, LOG2P, ROWS,
                    BLOCK_D, ACC, 0)


@triton.jit
def _map_kernel(level_ptr, index_ptr, map_ptr, S, M, N,
                L: tl.constexpr, LOG2P: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(1)
    s = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ms = s < S
    lvl = tl.load(level_ptr + row.to(tl.int64) * S + s, mask=ms, other=0).to(tl.int32)
    idx = tl.load(index_ptr + row.to(tl.int64) * S + s, mask=ms, other=0)
    off = tl.zeros_like(idx)
    for i in tl.static_range(L):
        off += tl.where(lvl > i, N >> (i * LOG2P), 0)
    tl.store(map_ptr + row.to(tl.int64) * M + off + idx, s.to(tl.int32), mask=ms)


def map_len(seq_len: int, pooling_factor: int, num_levels: int) -> int:
    """``M = sum_l N / p^l``: entries of the position map per row."""
    return sum(seq_len // pooling_factor**lvl for lvl in range(num_levels))


def _span(base: int, D: int) -> int:
    """A kernel's span in rows: ``base`` for D <= 128, half that above."""
    return base if D <= 128 else base // 2


def _pad3(xs: list, fill) -> list:
    return list(xs) + [fill] * (3 - len(xs))


class WindowPlan(NamedTuple):
    """One pool or spread launch: what it writes and how windows map to gathered rows."""

    length: int
    """Rows of each output: the gathered length ``S`` (pool) or the sequence length (spread)."""
    heads: list[int]
    """Heads of each output."""
    head_divs: list[int]
    """Per tensor: a pool's output head ``o`` reads input head ``o // div``; a spread's output
    head ``j`` sums the ``div`` gathered heads from ``j * div`` on."""
    sel_divs: list[int]
    """Per tensor: head ``h`` (a pool's output, a spread's input) uses selection head
    ``h // div``."""
    shift: bool
    """Windows shifted one row back, as the scatter (and its adjoint) reads them."""
    mean: bool
    """Window means, as the gather (and its adjoint) uses them, rather than sums."""
    pooling_factor: int
    num_levels: int

    def adjoint(self, xs: list[Tensor]) -> WindowPlan:
        """The plan of the adjoint launch on gradients of the outputs for ``xs``: the inputs'
        length and heads become its outputs'."""
        return self._replace(length=xs[0].shape[2], heads=[x.shape[1] for x in xs])


def gather_plan(gathered_len: int, heads: list[int], head_divs: list[int], pooling_factor: int,
                num_levels: int, sel_divs: list[int] | None = None) -> WindowPlan:
    """The gather: window means, unshifted, into ``gathered_len`` rows."""
    return WindowPlan(length=gathered_len, heads=heads, head_divs=head_divs,
                      sel_divs=sel_divs or [1] * len(heads), shift=False, mean=True,
                      pooling_factor=pooling_factor, num_levels=num_levels)


def scatter_plan(seq_len: int, heads: list[int], pooling_factor: int, num_levels: int,
                 sel_divs: list[int] | None = None) -> WindowPlan:
    """The scatter: gathered rows summed over the shifted windows of ``seq_len`` base rows."""
    return WindowPlan(length=seq_len, heads=heads, head_divs=[1] * len(heads),
                      sel_divs=sel_divs or [1] * len(heads), shift=True, mean=False,
                      pooling_factor=pooling_factor, num_levels=num_levels)


def pool_windows(xs: list[Tensor], pos_map: Tensor, plan: WindowPlan,
                 coarsest: list[Tensor] = (), tail: Tensor | None = None,
                 into: list[Tensor | None] | None = None) -> list[Tensor]:
    """For each ``x`` ``(B, H_x, N, D)`` (last dim contiguous) in ``xs`` (1 to 3 tensors):
    ``(B, plan.heads[i], plan.length, D)``: the sum or mean of each selected window's rows,
    in one launch (module doc). ``coarsest`` may hold,
    for the leading tensors of ``xs``, their coarsest level already pooled (contiguous
    ``(B, H_x, N / p^(L-1), D)`` means, from ``scores.row_norms_and_means``), which is then
    copied rather than pooled again (unshifted means only). ``tail``: for a shifted plan,
    the rows after the end of ``xs[0]``, ``(B, H_x, R, D)`` contiguous with ``R < p^(L-1)``
    (the adjoint of :func:`spread_windows`'s ``tail``); without it they are zero. ``into``:
    per output, a contiguous tensor of its shape and dtype to write it into, or ``None``."""
    B, _, N, D = xs[0].shape
    S, heads, x_divs, sel_divs, shift, mean, pooling_factor, num_levels = plan
    if coarsest and (shift or not mean or len(coarsest) > len(xs)):
        raise ValueError("given coarsest levels must be unshifted means of leading inputs")
    _check_tail(tail, xs[0], plan)
    into = into or [None] * len(xs)
    outs = [x.new_empty(B, h, S, D) if buf is None else buf
            for x, h, buf in zip(xs, heads, into)]
    for x, h, buf in zip(xs, heads, into):
        if buf is not None and (buf.shape != (B, h, S, D) or buf.dtype != x.dtype
                                or not buf.is_contiguous()):
            raise ValueError(f"an output goes into a contiguous {(B, h, S, D)} "
                             f"{x.dtype} tensor; got {tuple(buf.shape)} {buf.dtype}")
    rows = max(_span(POOL_ROWS, D), pooling_factor ** (num_levels - 1))  # whole windows
    grid = (cdiv(N + (pooling_factor ** (num_levels - 1) if shift else 0), rows),
            B * sum(heads))
    strides = [s for x in _pad3(xs, xs[0]) for s in x.stride()[:3]]
    fast(_pool_kernel)[grid](
        *_pad3(xs, xs[0]), *_pad3(outs, outs[0]), *_pad3(list(coarsest), xs[0]),
        xs[0] if tail is None else tail, pos_map, N,
        pos_map.shape[2], S, D, *_pad3(heads, 0), *_pad3(x_divs, 1), *_pad3(sel_divs, 1),
        *_pad3([c.shape[1] for c in coarsest], 1), pos_map.shape[1], *strides,
        *_tail_strides(tail), SHIFT=int(shift), MEAN=mean, L=num_levels, P=pooling_factor,
        LOG2P=pooling_factor.bit_length() - 1, ROWS=rows, BLOCK_D=next_pow2(D),
        ACC=accumulator(xs[0].dtype), GIVEN=len(coarsest),
        TAIL=0 if tail is None else tail.shape[2], num_warps=POOL_WARPS)
    return outs


def _check_tail(tail: Tensor | None, x: Tensor, plan: WindowPlan) -> None:
    """A tail holds fewer rows than the coarsest window, for a shifted plan, contiguous."""
    if tail is None:
        return
    window = plan.pooling_factor ** (plan.num_levels - 1)
    if not plan.shift or tail.shape[2] >= window or not tail.is_contiguous() or (
            tail.shape[:2] != x.shape[:2] or tail.shape[3] != x.shape[3]):
        raise ValueError(f"a tail is (B, H, R, D) contiguous with R < p^(L-1) = {window}, "
                         f"for shifted windows (the scatter); got {tuple(tail.shape)} for "
                         f"rows {tuple(x.shape)}, shift={plan.shift}")


def _tail_strides(tail: Tensor | None) -> tuple[int, int]:
    return (0, 0) if tail is None else tail.stride()[:2]


def spread_windows(gs: list[Tensor], pos_map: Tensor, plan: WindowPlan,
                   layouts: list[tuple[int, ...] | None] | None = None,
                   tail: Tensor | None = None,
                   into: list[Tensor] | None = None) -> list[Tensor]:
    """For each ``g`` ``(B, heads[i] * head_divs[i], S, D)`` (last dim contiguous) in ``gs``:
    ``(B, heads[i], plan.length, D)``, the gathered rows spread over the base rows their
    windows cover (divided by the window size if ``plan.mean``), in one launch. ``layouts``:
    per output, the strides to lay it out with (from :func:`layout_of`; ``None``:
    contiguous). ``tail``: for a shifted plan, a contiguous ``(B, heads[0], R, D)`` buffer
    (``R < p^(L-1)``) that receives the first output's rows past its end (what the last
    windows' summaries add to the rows after the sequence), in the buffer's dtype. ``into``:
    instead of new outputs, tensors of their shapes and dtypes (last dim contiguous) to write,
    e.g. views of bigger tensors."""
    B, _, _, D = gs[0].shape
    seq_len, heads, groups, sel_divs, shift, mean, pooling_factor, num_levels = plan
    if into is None:
        layouts = layouts or [None] * len(gs)
        outs = [new_laid_out(g, (B, h, seq_len, D), st) for g, h, st in zip(gs, heads, layouts)]
    else:
        outs = into
        for g, h, out in zip(gs, heads, outs):
            if out.shape != (B, h, seq_len, D) or out.dtype != g.dtype or out.stride(-1) != 1:
                raise ValueError(f"an output goes into a {(B, h, seq_len, D)} {g.dtype} tensor "
                                 f"with a contiguous last dim; got {tuple(out.shape)} "
                                 f"{out.dtype} with strides {out.stride()}")
    _check_tail(tail, outs[0], plan)
    tail_rows = 0 if tail is None else tail.shape[2]
    rows = _span(SPREAD_ROWS, D)
    grid = (cdiv(seq_len + int(shift) + tail_rows, rows), B * sum(heads))
    strides = [s for x in (_pad3(gs, gs[0]) + _pad3(outs, outs[0])) for s in x.stride()[:3]]
    fast(_spread_kernel)[grid](
        *_pad3(gs, gs[0]), *_pad3(outs, outs[0]), outs[0] if tail is None else tail, pos_map,
        seq_len, pos_map.shape[2], D, *_pad3(heads, 0), *_pad3(groups, 1),
        *_pad3(sel_divs, 1), pos_map.shape[1], *strides, *_tail_strides(tail),
        SHIFT=int(shift), MEAN=mean, L=num_levels, P=pooling_factor,
        LOG2P=pooling_factor.bit_length() - 1, ROWS=rows, BLOCK_D=next_pow2(D),
        ACC=accumulator(gs[0].dtype), TAIL=tail_rows, num_warps=spread_warps(len(gs), rows, D))
    return outs


def build_position_map(level: Tensor, index: Tensor, seq_len: int, pooling_factor: int,
                       num_levels: int) -> Tensor:
    """Inverse of a selection ``(level, index)`` ``(B, H', S)``: ``(B, H', M)`` int32 whose
    entry ``[b, h, off_l + m]`` is the gathered position of ``(l, m)``, or -1."""
    B, heads, S = level.shape
    pos_map = torch.full((B, heads, map_len(seq_len, pooling_factor, num_levels)), -1,
                         dtype=torch.int32, device=level.device)
    block = 1024
    fast(_map_kernel)[(cdiv(S, block), B * heads)](
        level.contiguous(), index.contiguous(), pos_map, S, pos_map.shape[2], seq_len,
        L=num_levels, LOG2P=pooling_factor.bit_length() - 1, BLOCK=block, num_warps=4)
    return pos_map


# --------------------------------------------------------------------------- autograd
# Eager calls go through light autograd Functions; under torch.compile the same launchers run
# inside torch.library custom ops (opaque to the compiler: no graph break, no fallback), with
# contiguous outputs. Each op's backward is the other op with the same flags and swapped head
# arguments.

def contiguous_rows(xs: list[Tensor]) -> list[Tensor]:
    """Each tensor with a contiguous last dim, as the kernels read rows."""
    return [x if x.stride(-1) == 1 else x.contiguous() for x in xs]


def _grads(ctx, grads):
    """Output gradients, zeros where autograd passes None (an output left unused)."""
    return [g if g is not None else torch.zeros(shape, dtype=ctx.dtype, device=ctx.device)
            for g, shape in zip(grads, ctx.out_shapes)]


def new_laid_out(x: Tensor, shape: tuple[int, ...], strides: tuple[int, ...] | None
                 ) -> Tensor:
    """A new tensor of ``x``'s dtype and device of ``shape`` with ``strides`` (``None``:
    contiguous), e.g. from :func:`layout_of`."""
    return x.new_empty(shape) if strides is None else x.new_empty_strided(shape, strides)


def layout_of(x: Tensor) -> tuple[int, ...] | None:
    """Strides of a new tensor shaped like ``x`` whose dims lie in memory in ``x``'s order (as
    ``torch.empty_like`` makes it), for a spread writing ``x``'s gradient in ``x``'s layout;
    ``None`` (contiguous) where ``x`` is contiguous or that layout's rows would not be."""
    if x.is_contiguous():
        return None
    strides = torch.empty_like(x, device="meta").stride()
    return strides if strides[-1] == 1 else None


def _keep_shapes(ctx, outs: list[Tensor]) -> None:
    ctx.out_shapes = [o.shape for o in outs]
    ctx.dtype, ctx.device = outs[0].dtype, outs[0].device


class _Pooled(torch.autograd.Function):
    """``pool_windows(xs)``, its gradient the spread of the output gradients, each in the
    layout of its input."""

    @staticmethod
    def forward(ctx, pos_map, plan, *xs):
        ctx.save_for_backward(pos_map)
        ctx.plan, ctx.layouts = plan.adjoint(xs), [layout_of(x) for x in xs]
        outs = pool_windows(contiguous_rows(xs), pos_map, plan)
        _keep_shapes(ctx, outs)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        (pos_map,) = ctx.saved_tensors
        return (None, None, *spread_windows(contiguous_rows(_grads(ctx, grads)), pos_map,
                                            ctx.plan, ctx.layouts))


class _Spread(torch.autograd.Function):
    """``spread_windows(gs)`` laid out as ``layouts`` say, its gradient the pool of the output
    gradients."""

    @staticmethod
    def forward(ctx, pos_map, plan, layouts, *gs):
        ctx.save_for_backward(pos_map)
        ctx.plan = plan.adjoint(gs)
        outs = spread_windows(contiguous_rows(gs), pos_map, plan, layouts)
        _keep_shapes(ctx, outs)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        (pos_map,) = ctx.saved_tensors
        return (None, None, None,
                *pool_windows(contiguous_rows(_grads(ctx, grads)), pos_map, ctx.plan))


# The custom ops take a WindowPlan's fields as their own arguments (an op's schema holds no
# tuple types), in the plan's order.
@torch.library.custom_op("lighthouse_attn::pool_windows", mutates_args=())
def pool_op(xs: list[Tensor], pos_map: Tensor, length: int, heads: list[int],
            head_divs: list[int], sel_divs: list[int], shift: bool, mean: bool,
            pooling_factor: int, num_levels: int) -> list[Tensor]:
    """:func:`pool_windows` as an opaque op for torch.compile."""
    return pool_windows(contiguous_rows(xs), pos_map, WindowPlan(
        length, heads, head_divs, sel_divs, shift, mean, pooling_factor, num_levels))


@pool_op.register_fake
def _(xs, pos_map, length, heads, *rest):
    return [x.new_empty(x.shape[0], h, length, x.shape[3]) for x, h in zip(xs, heads)]


@torch.library.custom_op("lighthouse_attn::spread_windows", mutates_args=())
def spread_op(gs: list[Tensor], pos_map: Tensor, length: int, heads: list[int],
              head_divs: list[int], sel_divs: list[int], shift: bool, mean: bool,
              pooling_factor: int, num_levels: int) -> list[Tensor]:
    """:func:`spread_windows` as an opaque op for torch.compile."""
    return spread_windows(contiguous_rows(gs), pos_map, WindowPlan(
        length, heads, head_divs, sel_divs, shift, mean, pooling_factor, num_levels))


@spread_op.register_fake
def _(gs, pos_map, length, heads, *rest):
    return [g.new_empty(g.shape[0], h, length, g.shape[3]) for g, h in zip(gs, heads)]


def _setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.plan = WindowPlan(*inputs[2:]).adjoint(inputs[0])


def _pool_op_backward(ctx, grads):
    (pos_map,) = ctx.saved_tensors
    return (spread_op(list(grads), pos_map, *ctx.plan),) + (None,) * 9


def _spread_op_backward(ctx, grads):
    (pos_map,) = ctx.saved_tensors
    return (pool_op(list(grads), pos_map, *ctx.plan),) + (None,) * 9


pool_op.register_autograd(_pool_op_backward, setup_context=_setup)
spread_op.register_autograd(_spread_op_backward, setup_context=_setup)


def pool_windows_differentiable(xs: list[Tensor], pos_map: Tensor, plan: WindowPlan
                                ) -> list[Tensor]:
    """:func:`pool_windows` with its gradient (an autograd Function eagerly, giving each input
    its gradient in its own layout; a custom op compiled)."""
    if torch.compiler.is_compiling():
        return pool_op(list(xs), pos_map, *plan)
    return list(_Pooled.apply(pos_map, plan, *xs))


def spread_windows_differentiable(gs: list[Tensor], pos_map: Tensor, plan: WindowPlan,
                                  like: list[Tensor] | None = None) -> list[Tensor]:
    """:func:`spread_windows` with its gradient (an autograd Function eagerly, its outputs
    laid out in memory as the tensors ``like`` are; a custom op compiled, its outputs
    contiguous)."""
    if torch.compiler.is_compiling():
        return spread_op(list(gs), pos_map, *plan)
    layouts = None if like is None else [layout_of(x) for x in like]
    return list(_Spread.apply(pos_map, plan, layouts, *gs))


def position_map(selection: Selection, seq_len: int, pooling_factor: int, num_levels: int
                 ) -> Tensor:
    """Inverse of a selection (see :func:`build_position_map`); an opaque op when compiled."""
    if torch.compiler.is_compiling():
        return _position_map_op(selection.level, selection.index, seq_len, pooling_factor,
                                num_levels)
    return build_position_map(selection.level, selection.index, seq_len, pooling_factor,
                              num_levels)


@torch.library.custom_op("lighthouse_attn::position_map", mutates_args=())
def _position_map_op(level: Tensor, index: Tensor, seq_len: int, pooling_factor: int,
                     num_levels: int) -> Tensor:
    return build_position_map(level, index, seq_len, pooling_factor, num_levels)


@_position_map_op.register_fake
def _(level, index, seq_len, pooling_factor, num_levels):
    B, heads, _ = level.shape
    return level.new_empty(B, heads, map_len(seq_len, pooling_factor, num_levels),
                           dtype=torch.int32)
