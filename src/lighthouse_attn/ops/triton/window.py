"""The memory-bound kernels behind gather and scatter: ``pool`` and ``spread``, exact adjoints.

Both walk the base sequence in aligned spans of ``ROWS`` rows (a multiple of the coarsest
window ``p^(L-1)``), in "u-space" ``u = t + shift``: with ``shift = 1`` the shifted window of
entry ``(l, m)``, base rows ``[(m+1) p^l - 1, (m+2) p^l - 1)``, is the aligned u-window
``m + 1``. Gathered entries are found through the inverse position map (``position_map``).

``pool``: reads every base row of a span once and sums it up the pyramid in registers; each
gathered entry whose window lies in the span gets its sum (mean if ``mean``).
    gather forward   = pool(x, mean, shift 0)      (pooling fused into the gather)
    scatter backward = pool(grad_out, sum, shift 1)
``spread``: every base row gets, at each level, the gathered row whose window covers it
(divided by ``p^l`` if ``mean``), summed over levels in order 0 .. L-1.
    gather backward  = spread(grad_gathered, mean, shift 0)
    scatter forward  = spread(o, sum, shift 1)

No atomics: every output row is written by exactly one program, so results are deterministic.
Heads: output head ``o`` of ``pool`` reads input head ``o // x_div`` and selection head
``o // sel_div``; ``spread`` output head ``j`` sums the ``group`` heads ``j * group + i``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..select import Selection

@triton.jit
def _pool_kernel(x_ptr, map_ptr, out_ptr, N, M, D, out_heads, x_div, sel_div, sel_heads,
                 sxb, sxh, sxn, sob, soh, sos,
                 SHIFT: tl.constexpr, MEAN: tl.constexpr, L: tl.constexpr, P: tl.constexpr,
                 LOG2P: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
                 ACC: tl.constexpr):
    pid_u = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // out_heads
    o = pid_bh % out_heads
    u0 = pid_u * ROWS
    t = u0 + tl.arange(0, ROWS) - SHIFT
    d = tl.arange(0, BLOCK_D)
    md = d < D
    x_base = x_ptr + b.to(tl.int64) * sxb + (o // x_div).to(tl.int64) * sxh
    cur = tl.load(x_base + t[:, None].to(tl.int64) * sxn + d[None, :],
                  mask=((t >= 0) & (t < N))[:, None] & md[None, :], other=0.0).to(ACC)
    map_row = map_ptr + (b * sel_heads + o // sel_div).to(tl.int64) * M
    out_base = out_ptr + b.to(tl.int64) * sob + o.to(tl.int64) * soh
    level_off = 0
    for lvl in tl.static_range(L):
        if lvl > 0:
            cur = tl.sum(tl.reshape(cur, (ROWS // (P**lvl), P, BLOCK_D)), axis=1)
        m = (u0 >> (lvl * LOG2P)) + tl.arange(0, ROWS // (P**lvl)) - SHIFT
        ok = (m >= 0) & (m < (N >> (lvl * LOG2P)))
        s = tl.load(map_row + level_off + m, mask=ok, other=-1)
        ok = ok & (s >= 0)
        val = cur
        if MEAN:
            val = cur * (1.0 / (P**lvl))
        tl.store(out_base + s[:, None].to(tl.int64) * sos + d[None, :],
                 val.to(out_ptr.dtype.element_ty), mask=ok[:, None] & md[None, :])
        level_off += N >> (lvl * LOG2P)


@triton.jit
def _spread_kernel(g_ptr, map_ptr, out_ptr, N, M, D, out_heads, group, sel_div, sel_heads,
                   sgb, sgh, sgs, sob, soh, son,
                   SHIFT: tl.constexpr, MEAN: tl.constexpr, L: tl.constexpr, P: tl.constexpr,
                   LOG2P: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
                   ACC: tl.constexpr):
    pid_u = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // out_heads
    j = pid_bh % out_heads
    u0 = pid_u * ROWS
    d = tl.arange(0, BLOCK_D)
    md = d < D
    acc = tl.zeros((ROWS, BLOCK_D), ACC)
    for i in range(group):
        g_head = j * group + i
        map_row = map_ptr + (b * sel_heads + g_head // sel_div).to(tl.int64) * M
        g_base = g_ptr + b.to(tl.int64) * sgb + g_head.to(tl.int64) * sgh
        level_off = 0
        for lvl in tl.static_range(L):
            m = (u0 >> (lvl * LOG2P)) + tl.arange(0, ROWS // (P**lvl)) - SHIFT
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
                acc += tl.reshape(tl.broadcast_to(rows[:, None, :],
                                                  (ROWS // (P**lvl), P**lvl, BLOCK_D)),
                                  (ROWS, BLOCK_D))
            level_off += N >> (lvl * LOG2P)
    t = u0 + tl.arange(0, ROWS) - SHIFT
    out = out_ptr + b.to(tl.int64) * sob + j.to(tl.int64) * soh + t[:, None].to(tl.int64) * son
    tl.store(out + d[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=((t >= 0) & (t < N))[:, None] & md[None, :])


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


def _acc(dtype: torch.dtype):
    """Accumulator: fp64 for fp64 data, fp32 otherwise (as the reference path)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def _rows(pooling_factor: int, num_levels: int, D: int) -> int:
    """Span length: a multiple of the coarsest window, about 8K elements of registers."""
    window = pooling_factor ** (num_levels - 1)
    return max(window, min(64, 8192 // triton.next_power_of_2(D)))


def position_map(selection: Selection, seq_len: int, pooling_factor: int, num_levels: int
                 ) -> Tensor:
    """Inverse of a selection: ``(B, H', M)`` int32, ``M = sum_l N / p^l``; entry
    ``[b, h, off_l + m]`` is the gathered position of ``(l, m)``, or -1 if not gathered."""
    return _position_map(selection.level, selection.index, seq_len, pooling_factor, num_levels)


@torch.library.custom_op("lighthouse_attn::position_map", mutates_args=())
def _position_map(level: Tensor, index: Tensor, seq_len: int, pooling_factor: int,
                  num_levels: int) -> Tensor:
    B, heads, S = level.shape
    pos_map = torch.full((B, heads, _map_len(seq_len, pooling_factor, num_levels)), -1,
                         dtype=torch.int32, device=level.device)
    block = 1024
    _map_kernel[(triton.cdiv(S, block), B * heads)](
        level.contiguous(), index.contiguous(), pos_map, S, pos_map.shape[2], seq_len,
        L=num_levels, LOG2P=pooling_factor.bit_length() - 1, BLOCK=block, num_warps=4)
    return pos_map


@_position_map.register_fake
def _(level, index, seq_len, pooling_factor, num_levels):
    B, heads, _ = level.shape
    return level.new_empty(B, heads, _map_len(seq_len, pooling_factor, num_levels),
                           dtype=torch.int32)


def _map_len(seq_len: int, pooling_factor: int, num_levels: int) -> int:
    return sum(seq_len // pooling_factor**lvl for lvl in range(num_levels))


def pool(x: Tensor, pos_map: Tensor, S: int, out_heads: int, x_div: int, sel_div: int,
         shift: bool, mean: bool, pooling_factor: int, num_levels: int) -> Tensor:
    """``(B, out_heads, S, D)``: pooled windows of ``x`` ``(B, H_x, N, D)`` (module doc)."""
    B, _, N, D = x.shape
    out = x.new_empty(B, out_heads, S, D)
    rows = _rows(pooling_factor, num_levels, D)
    grid = (triton.cdiv(N + (pooling_factor ** (num_levels - 1) if shift else 0), rows),
            B * out_heads)
    _pool_kernel[grid](
        x, pos_map, out, N, pos_map.shape[2], D, out_heads, x_div, sel_div, pos_map.shape[1],
        x.stride(0), x.stride(1), x.stride(2), out.stride(0), out.stride(1), out.stride(2),
        SHIFT=int(shift), MEAN=mean, L=num_levels, P=pooling_factor,
        LOG2P=pooling_factor.bit_length() - 1, ROWS=rows, BLOCK_D=triton.next_power_of_2(D),
        ACC=_acc(x.dtype), num_warps=4)
    return out


def spread(g: Tensor, pos_map: Tensor, seq_len: int, out_heads: int, group: int,
           sel_div: int, shift: bool, mean: bool, pooling_factor: int, num_levels: int
           ) -> Tensor:
    """``(B, out_heads, N, D)``: gathered rows ``g`` ``(B, out_heads * group, S, D)`` spread
    over the base rows they cover (module doc)."""
    B, _, _, D = g.shape
    out = g.new_empty(B, out_heads, seq_len, D)
    rows = _rows(pooling_factor, num_levels, D)
    grid = (triton.cdiv(seq_len + int(shift), rows), B * out_heads)
    _spread_kernel[grid](
        g, pos_map, out, seq_len, pos_map.shape[2], D, out_heads, group, sel_div,
        pos_map.shape[1], g.stride(0), g.stride(1), g.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        SHIFT=int(shift), MEAN=mean, L=num_levels, P=pooling_factor,
        LOG2P=pooling_factor.bit_length() - 1, ROWS=rows, BLOCK_D=triton.next_power_of_2(D),
        ACC=_acc(g.dtype), num_warps=4)
    return out


# --------------------------------------------------------------------------- custom ops
# Registered with torch.library so torch.compile sees opaque ops (no graph break, no silent
# fallback). Each op's autograd is the other op with the same flags and swapped head arguments.

@torch.library.custom_op("lighthouse_attn::pool", mutates_args=())
def pool_op(x: Tensor, pos_map: Tensor, S: int, out_heads: int, x_div: int, sel_div: int,
            shift: bool, mean: bool, pooling_factor: int, num_levels: int) -> Tensor:
    """Differentiable :func:`pool`."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    return pool(x, pos_map, S, out_heads, x_div, sel_div, shift, mean, pooling_factor,
                num_levels)


@pool_op.register_fake
def _(x, pos_map, S, out_heads, x_div, sel_div, shift, mean, pooling_factor, num_levels):
    return x.new_empty(x.shape[0], out_heads, S, x.shape[3])


@torch.library.custom_op("lighthouse_attn::spread", mutates_args=())
def spread_op(g: Tensor, pos_map: Tensor, seq_len: int, out_heads: int, group: int,
              sel_div: int, shift: bool, mean: bool, pooling_factor: int, num_levels: int
              ) -> Tensor:
    """Differentiable :func:`spread`."""
    if g.stride(-1) != 1:
        g = g.contiguous()
    return spread(g, pos_map, seq_len, out_heads, group, sel_div, shift, mean, pooling_factor,
                  num_levels)


@spread_op.register_fake
def _(g, pos_map, seq_len, out_heads, group, sel_div, shift, mean, pooling_factor, num_levels):
    return g.new_empty(g.shape[0], out_heads, seq_len, g.shape[3])


def _setup_pool(ctx, inputs, output):
    x, pos_map, S, out_heads, x_div, sel_div, shift, mean, p, L = inputs
    ctx.save_for_backward(pos_map)
    ctx.args = (x.shape[2], x.shape[1], x_div, sel_div, shift, mean, p, L)


def _pool_backward(ctx, grad):
    (pos_map,) = ctx.saved_tensors
    dx = spread_op(grad, pos_map, *ctx.args)
    return (dx,) + (None,) * 9


def _setup_spread(ctx, inputs, output):
    g, pos_map, N, out_heads, group, sel_div, shift, mean, p, L = inputs
    ctx.save_for_backward(pos_map)
    ctx.args = (g.shape[2], g.shape[1], group, sel_div, shift, mean, p, L)


def _spread_backward(ctx, grad):
    (pos_map,) = ctx.saved_tensors
    dg = pool_op(grad, pos_map, *ctx.args)
    return (dg,) + (None,) * 9


pool_op.register_autograd(_pool_backward, setup_context=_setup_pool)
spread_op.register_autograd(_spread_backward, setup_context=_setup_spread)
