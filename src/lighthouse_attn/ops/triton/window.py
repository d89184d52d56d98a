"""The two memory-bound kernels behind gather and scatter, exact adjoints of each other.

``window_reduce``: one output row per gathered entry ``s = (l, m)``: the sum (or mean) of the
base rows of its window ``[m p^l, (m+1) p^l)``, shifted by ``p^l - 1`` when ``shift``.
    gather forward  = window_reduce(x, mean, no shift)   (pooling fused into the gather)
    scatter backward = window_reduce(grad_out, sum, shift)

``window_expand``: one output row per base position ``t``: the sum over levels ``l`` of the row
of the gathered entry covering ``t`` at that level (found through the inverse position map),
divided by ``p^l`` when ``mean``.
    gather backward = window_expand(grad_gathered, mean, no shift)
    scatter forward = window_expand(o, sum, shift)

Both read only what they write from (no atomics): results are deterministic. Heads: output head
``o`` reads input head ``o // x_div`` and selection head ``o // sel_div`` (reduce); the expand
kernel sums the ``group`` gathered heads ``j * group + i`` of output head ``j``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..select import Selection


@triton.jit
def _window_reduce_kernel(x_ptr, level_ptr, index_ptr, out_ptr,
                          S, N, D, out_heads, x_div, sel_div, sel_heads,
                          sxb, sxh, sxn, sob, soh, sos,
                          SHIFT: tl.constexpr, MEAN: tl.constexpr, LOG2P: tl.constexpr,
                          ACC: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // out_heads
    o = pid_bh % out_heads
    s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    ms = s < S
    sel_row = (b * sel_heads + o // sel_div).to(tl.int64) * S
    lvl = tl.load(level_ptr + sel_row + s, mask=ms, other=0)
    idx = tl.load(index_ptr + sel_row + s, mask=ms, other=0)
    width = tl.full(lvl.shape, 1, tl.int64) << (lvl * LOG2P)
    start = idx * width
    if SHIFT:
        start += width - 1
    d = tl.arange(0, BLOCK_D)
    md = d < D
    x_base = x_ptr + b.to(tl.int64) * sxb + (o // x_div).to(tl.int64) * sxh
    acc = tl.zeros((BLOCK_S, BLOCK_D), ACC)
    for j in range(0, tl.max(tl.where(ms, width, 0), 0)):
        t = start + j
        m = ms & (j < width) & (t < N)
        acc += tl.load(x_base + t[:, None] * sxn + d[None, :], mask=m[:, None] & md[None, :],
                       other=0.0).to(ACC)
    if MEAN:
        acc = acc / width[:, None].to(ACC)
    out = out_ptr + b.to(tl.int64) * sob + o.to(tl.int64) * soh + s[:, None].to(tl.int64) * sos
    tl.store(out + d[None, :], acc.to(out_ptr.dtype.element_ty), mask=ms[:, None] & md[None, :])


@triton.jit
def _window_expand_kernel(g_ptr, map_ptr, out_ptr,
                          N, M, D, out_heads, group, sel_div, sel_heads,
                          sgb, sgh, sgs, sob, soh, son,
                          SHIFT: tl.constexpr, MEAN: tl.constexpr, L: tl.constexpr,
                          LOG2P: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr,
                          BLOCK_D: tl.constexpr):
    pid_t = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // out_heads
    j = pid_bh % out_heads
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    mt = t < N
    d = tl.arange(0, BLOCK_D)
    md = d < D
    acc = tl.zeros((BLOCK_T, BLOCK_D), ACC)
    for i in range(group):
        g_head = j * group + i
        map_row = map_ptr + (b * sel_heads + g_head // sel_div).to(tl.int64) * M
        g_base = g_ptr + b.to(tl.int64) * sgb + g_head.to(tl.int64) * sgh
        level_off = 0
        for lvl in tl.static_range(L):
            if SHIFT:
                m = ((t + 1) >> (lvl * LOG2P)) - 1
            else:
                m = t >> (lvl * LOG2P)
            ok = mt & (m >= 0)
            s = tl.load(map_row + level_off + m, mask=ok, other=-1)
            ok = ok & (s >= 0)
            rows = tl.load(g_base + s[:, None].to(tl.int64) * sgs + d[None, :],
                           mask=ok[:, None] & md[None, :], other=0.0).to(ACC)
            if MEAN:
                rows = rows * (1.0 / (1 << (lvl * LOG2P)))
            acc += rows
            level_off += N >> (lvl * LOG2P)
    out = out_ptr + b.to(tl.int64) * sob + j.to(tl.int64) * soh + t[:, None].to(tl.int64) * son
    tl.store(out + d[None, :], acc.to(out_ptr.dtype.element_ty), mask=mt[:, None] & md[None, :])


def _acc(dtype: torch.dtype):
    """Accumulator: fp64 for fp64 data, fp32 otherwise (as the reference path)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def _log2(p: int) -> int:
    if p & (p - 1):
        raise ValueError(f"the triton backend needs a power-of-two pooling_factor (got {p}); "
                         "use pooling_factor=2, 4 or 8, or backend='torch'")
    return p.bit_length() - 1


def position_map(selection: Selection, seq_len: int, pooling_factor: int, num_levels: int
                 ) -> Tensor:
    """Inverse of a selection: ``(B, H', M)`` int32, ``M = sum_l N / p^l``; entry
    ``[b, h, off_l + m]`` is the gathered position of ``(l, m)`` or -1 if not gathered."""
    B, heads, S = selection.level.shape
    sizes = [seq_len // pooling_factor**lvl for lvl in range(num_levels)]
    offsets = torch.tensor([sum(sizes[:lvl]) for lvl in range(num_levels)],
                           device=selection.level.device)
    pos_map = torch.full((B, heads, sum(sizes)), -1, dtype=torch.int32,
                         device=selection.level.device)
    src = torch.arange(S, dtype=torch.int32, device=pos_map.device).expand(B, heads, S)
    return pos_map.scatter_(2, offsets[selection.level] + selection.index, src)


def window_reduce(x: Tensor, level: Tensor, index: Tensor, out_heads: int, x_div: int,
                  sel_div: int, shift: bool, mean: bool, pooling_factor: int) -> Tensor:
    """``(B, out_heads, S, D)`` rows of windows of ``x`` ``(B, H_x, N, D)`` (module doc)."""
    B, _, N, D = x.shape
    sel_heads, S = level.shape[1], level.shape[2]
    out = x.new_empty(B, out_heads, S, D)
    block_d = triton.next_power_of_2(D)
    block_s = max(16, min(64, 8192 // block_d))
    grid = (triton.cdiv(S, block_s), B * out_heads)
    _window_reduce_kernel[grid](
        x, level, index, out, S, N, D, out_heads, x_div, sel_div, sel_heads,
        x.stride(0), x.stride(1), x.stride(2), out.stride(0), out.stride(1), out.stride(2),
        SHIFT=shift, MEAN=mean, LOG2P=_log2(pooling_factor), ACC=_acc(x.dtype), BLOCK_S=block_s,
        BLOCK_D=block_d, num_warps=4)
    return out


def window_expand(g: Tensor, pos_map: Tensor, seq_len: int, out_heads: int, group: int,
                  sel_div: int, shift: bool, mean: bool, pooling_factor: int, num_levels: int
                  ) -> Tensor:
    """``(B, out_heads, N, D)``: every base row gets the gathered rows covering it (module
    doc); ``g`` is ``(B, H_g, S, D)`` with ``H_g = out_heads * group``."""
    B, _, _, D = g.shape
    out = g.new_empty(B, out_heads, seq_len, D)
    block_d = triton.next_power_of_2(D)
    block_t = max(16, min(64, 8192 // block_d))
    grid = (triton.cdiv(seq_len, block_t), B * out_heads)
    _window_expand_kernel[grid](
        g, pos_map, out, seq_len, pos_map.shape[2], D, out_heads, group, sel_div,
        pos_map.shape[1], g.stride(0), g.stride(1), g.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        SHIFT=shift, MEAN=mean, L=num_levels, LOG2P=_log2(pooling_factor), ACC=_acc(g.dtype),
        BLOCK_T=block_t, BLOCK_D=block_d, num_warps=4)
    return out


# --------------------------------------------------------------------------- custom ops
# Registered with torch.library so torch.compile sees opaque ops (no graph break, no silent
# fallback). Each op's autograd is the other op with the same flags and swapped head arguments.

@torch.library.custom_op("lighthouse_attn::window_reduce", mutates_args=())
def window_reduce_op(x: Tensor, level: Tensor, index: Tensor, pos_map: Tensor, out_heads: int,
                     x_div: int, sel_div: int, shift: bool, mean: bool, pooling_factor: int,
                     num_levels: int) -> Tensor:
    """Differentiable :func:`window_reduce` (``pos_map`` serves its backward)."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    return window_reduce(x, level, index, out_heads, x_div, sel_div, shift, mean,
                         pooling_factor)


@window_reduce_op.register_fake
def _(x, level, index, pos_map, out_heads, x_div, sel_div, shift, mean, pooling_factor,
      num_levels):
    return x.new_empty(x.shape[0], out_heads, level.shape[2], x.shape[3])


@torch.library.custom_op("lighthouse_attn::window_expand", mutates_args=())
def window_expand_op(g: Tensor, level: Tensor, index: Tensor, pos_map: Tensor, seq_len: int,
                     out_heads: int, group: int, sel_div: int, shift: bool, mean: bool,
                     pooling_factor: int, num_levels: int) -> Tensor:
    """Differentiable :func:`window_expand` (``level``/``index`` serve its backward)."""
    if g.stride(-1) != 1:
        g = g.contiguous()
    return window_expand(g, pos_map, seq_len, out_heads, group, sel_div, shift, mean,
                         pooling_factor, num_levels)


@window_expand_op.register_fake
def _(g, level, index, pos_map, seq_len, out_heads, group, sel_div, shift, mean,
      pooling_factor, num_levels):
    return g.new_empty(g.shape[0], out_heads, seq_len, g.shape[3])


def _setup_reduce(ctx, inputs, output):
    x, level, index, pos_map, out_heads, x_div, sel_div, shift, mean, p, L = inputs
    ctx.save_for_backward(level, index, pos_map)
    ctx.args = (x.shape[2], x.shape[1], x_div, sel_div, shift, mean, p, L)


def _reduce_backward(ctx, grad):
    level, index, pos_map = ctx.saved_tensors
    N, x_heads, x_div, sel_div, shift, mean, p, L = ctx.args
    dx = window_expand_op(grad, level, index, pos_map, N, x_heads, x_div, sel_div, shift, mean,
                          p, L)
    return dx, None, None, None, None, None, None, None, None, None, None


def _setup_expand(ctx, inputs, output):
    g, level, index, pos_map, N, out_heads, group, sel_div, shift, mean, p, L = inputs
    ctx.save_for_backward(level, index, pos_map)
    ctx.args = (out_heads * group, group, sel_div, shift, mean, p, L)


def _expand_backward(ctx, grad):
    level, index, pos_map = ctx.saved_tensors
    g_heads, group, sel_div, shift, mean, p, L = ctx.args
    dg = window_reduce_op(grad, level, index, pos_map, g_heads, group, sel_div, shift, mean, p,
                          L)
    return dg, None, None, None, None, None, None, None, None, None, None, None


window_reduce_op.register_autograd(_reduce_backward, setup_context=_setup_reduce)
window_expand_op.register_autograd(_expand_backward, setup_context=_setup_expand)
