"""Triton twin of ``ops/select.py``: the whole tile-stratified cascade in one launch.

One program per (batch row x selecting head, tile). Per level it reads the window-max scores of
its candidates straight from the level-0 scores, picks ``A`` and ``B`` with a binary search on
the fp32 bit patterns (ties to the lower index, as the reference), compacts the chosen parents
through a small scratch row, and finally sorts the tile's packed causal keys in registers. The
tile's entries form one contiguous segment of the gathered sequence (tiles cover consecutive
base windows), so no global sort is needed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...config import HALF, TILE, LighthouseConfig
from ..select import Selection
from .window import map_len

LEVEL_BITS = 3  # packed key = (causal key * 2^L) << 3 | level; L <= 7


@triton.jit
def _window_max(s_row, cand, valid, W: tl.constexpr):
    """max of the level-0 scores over each candidate's window of W tokens (-1 where invalid)."""
    acc = tl.full(cand.shape, -1.0, tl.float32)
    for j in range(W):
        acc = tl.maximum(acc, tl.load(s_row + cand * W + j, mask=valid, other=-1.0))
    return acc


@triton.jit
def _sort_bits(score, valid):
    """int32 keys that order like the scores (scores are >= 0; -0.0 counts as 0); -1 invalid."""
    bits = score.to(tl.int32, bitcast=True)
    bits = tl.where(bits < 0, 0, bits)
    return tl.where(valid, bits, -1)


@triton.jit
def _top(keys, K: tl.constexpr):
    """Mask of the K largest keys (K <= number of keys >= 0), ties to the lower position."""
    lo = tl.max(keys, 0) * 0  # scalar int32 zero
    hi = lo + 0x7FFFFFFF
    for _ in range(31):  # largest lo with count(keys >= lo) >= K
        gap = hi - lo
        mid = lo + (gap >> 1) + (gap & 1)
        ok = tl.sum((keys >= mid).to(tl.int32), 0) >= K
        lo = tl.where(ok, mid, lo)
        hi = tl.where(ok, hi, mid - 1)
    above = keys > lo
    need = K - tl.sum(above.to(tl.int32), 0)
    tied = keys == lo
    return above | (tied & (tl.cumsum(tied.to(tl.int32), 0) <= need))


@triton.jit
def _pick_and_emit(sq_row, sk_row, cand, valid, key_row, key_off, lvl: tl.constexpr,
                   W: tl.constexpr, L: tl.constexpr, HALF_: tl.constexpr):
    """Pick A and B among the candidates of level ``lvl`` (window ``W`` tokens), store their
    packed keys at ``key_row + key_off``, return the chosen mask."""
    kq = _sort_bits(_window_max(sq_row, cand, valid, W), valid)
    in_a = _top(kq, HALF_) & valid
    kk = _sort_bits(_window_max(sk_row, cand, valid, W), valid & (in_a == 0))
    chosen = in_a | (_top(kk, HALF_) & valid)
    start = (cand * W).to(tl.int64) << L
    end_minus = (((cand + 1) * W).to(tl.int64) << L) - (1 << (L - lvl))
    key = tl.where(chosen, end_minus, start)
    offs = tl.arange(0, cand.shape[0])
    tl.store(key_row + key_off + offs, (key << 3) | lvl, mask=valid)
    return chosen


@triton.jit
def _children(parent_row, cand, chosen, P: tl.constexpr, TILE_: tl.constexpr):
    """The P children of every chosen candidate, ascending: TILE_ * P indices."""
    rank = tl.cumsum(chosen.to(tl.int32), 0) - 1
    tl.store(parent_row + rank, cand, mask=chosen)
    tl.debug_barrier()
    j = tl.arange(0, TILE_ * P)
    parent = tl.load(parent_row + j // P)
    tl.debug_barrier()  # the next level overwrites the scratch row
    return parent * P + j % P


@triton.jit
def _select_kernel(sq_ptr, sk_ptr, level_ptr, index_ptr, map_ptr, key_ptr, parent_ptr,
                   N, S, M, C, heads, sk_div,
                   L: tl.constexpr, P: tl.constexpr, LOG2P: tl.constexpr,
                   BLOCK_C: tl.constexpr, E_PAD: tl.constexpr, TILE_: tl.constexpr,
                   HALF_: tl.constexpr):
    tile = tl.program_id(0)
    row = tl.program_id(1)
    n_tiles = tl.num_programs(0)
    sk_row_id = (row // heads) * (heads // sk_div) + (row % heads) // sk_div
    sq_row = sq_ptr + row.to(tl.int64) * N
    sk_row = sk_ptr + sk_row_id.to(tl.int64) * N
    prog = row.to(tl.int64) * n_tiles + tile
    key_row = key_ptr + prog * E_PAD
    parent_row = parent_ptr + prog * TILE_
    E = C + (L - 1) * TILE_ * P

    # coarsest level: every entry of the tile is a candidate
    offs_c = tl.arange(0, BLOCK_C)
    valid_c = offs_c < C
    cand_c = tile * C + offs_c
    chosen_c = _pick_and_emit(sq_row, sk_row, cand_c, valid_c, key_row, 0, L - 1,
                              1 << ((L - 1) * LOG2P), L, HALF_)
    cand = _children(parent_row, cand_c, chosen_c, P, TILE_)
    ones = cand >= 0
    key_off = C
    for i in tl.static_range(L - 2):  # finer levels L-2 .. 1: children of the chosen ones
        chosen = _pick_and_emit(sq_row, sk_row, cand, ones, key_row, key_off, L - 2 - i,
                                1 << ((L - 2 - i) * LOG2P), L, HALF_)
        cand = _children(parent_row, cand, chosen, P, TILE_)
        key_off += TILE_ * P
    # level 0: base tokens
    tl.store(key_row + key_off + tl.arange(0, TILE_ * P), (cand.to(tl.int64) << L) << 3)
    tl.debug_barrier()

    offs_e = tl.arange(0, E_PAD)
    keys = tl.load(key_row + offs_e, mask=offs_e < E, other=0x7FFFFFFFFFFFFFFF)
    keys = tl.sort(keys)
    lvl = (keys & 7).to(tl.int32)
    pos = keys >> 3
    low = pos & ((1 << L) - 1)
    lvl64 = lvl.to(tl.int64)
    end = (pos + (tl.full(lvl.shape, 1, tl.int64) << (L - lvl64))) >> L
    index = tl.where(low == 0, (pos >> L) >> (lvl64 * LOG2P), (end >> (lvl64 * LOG2P)) - 1)
    pos = tile * E + offs_e
    out = row.to(tl.int64) * S + pos
    tl.store(level_ptr + out, lvl.to(tl.int64), mask=offs_e < E)
    tl.store(index_ptr + out, index, mask=offs_e < E)
    level_off = tl.zeros_like(index)
    for i in tl.static_range(L):
        level_off += tl.where(lvl > i, N >> (i * LOG2P), 0)
    tl.store(map_ptr + row.to(tl.int64) * M + level_off + index, pos, mask=offs_e < E)


def select_tiles(sq0: Tensor, sk0: Tensor, num_levels: int, pooling_factor: int, topk: int
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the cascade: ``(level, index, pos_map)`` (see :func:`select_with_map`)."""
    L, p, T = num_levels, pooling_factor, topk // TILE
    B, heads, N = sq0.shape
    C = N // p ** (L - 1) // T
    E = C + (L - 1) * TILE * p
    E_pad = triton.next_power_of_2(E)
    level = torch.empty(B, heads, T * E, dtype=torch.int64, device=sq0.device)
    index = torch.empty_like(level)
    pos_map = torch.full((B, heads, map_len(N, p, L)), -1, dtype=torch.int32,
                         device=sq0.device)
    keys = torch.empty(B * heads * T, E_pad, dtype=torch.int64, device=sq0.device)
    parents = torch.empty(B * heads * T, TILE, dtype=torch.int32, device=sq0.device)
    _select_kernel[(T, B * heads)](
        sq0.contiguous(), sk0.contiguous(), level, index, pos_map, keys, parents,
        N, T * E, pos_map.shape[2], C, heads, heads // sk0.shape[1],
        L=L, P=p, LOG2P=p.bit_length() - 1, BLOCK_C=triton.next_power_of_2(C), E_PAD=E_pad,
        TILE_=TILE, HALF_=HALF, num_warps=16 if E_pad >= 4096 else 8)
    return level, index, pos_map


@torch.library.custom_op("lighthouse_attn::select_tiles", mutates_args=())
def select_tiles_op(sq0: Tensor, sk0: Tensor, num_levels: int, pooling_factor: int, topk: int
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`select_tiles` as an opaque op for torch.compile."""
    return select_tiles(sq0, sk0, num_levels, pooling_factor, topk)


@select_tiles_op.register_fake
def _(sq0, sk0, num_levels, pooling_factor, topk):
    B, heads, N = sq0.shape
    S = N // pooling_factor ** (num_levels - 1) + (num_levels - 1) * pooling_factor * topk
    out = sq0.new_empty(B, heads, S, dtype=torch.int64)
    pos_map = sq0.new_empty(B, heads, map_len(N, pooling_factor, num_levels),
                            dtype=torch.int32)
    return out, torch.empty_like(out), pos_map


def select_with_map(sq0: Tensor, sk0: Tensor, config: LighthouseConfig
                    ) -> tuple[Selection, Tensor]:
    """Run the cascade on level-0 scores: ``sq0`` ``(B, H', N)`` fp32 and ``sk0``
    ``(B, H'/r, N)`` fp32 (``r`` query heads per key head: the ``expand`` GQA mode passes the
    un-repeated key scores). Returns the same :class:`Selection` as
    ``ops.select.select_from_scores`` on the window-max level scores, and its inverse position
    map ``(B, H', M)`` int32 (see ``window.build_position_map``). ``pooling_factor`` must be a
    power of two and ``L <= 7``."""
    if config.num_levels == 1:
        B, heads, N = sq0.shape
        index = torch.arange(N, device=sq0.device).expand(B, heads, N).contiguous()
        return Selection(torch.zeros_like(index), index), index.to(torch.int32)
    args = (sq0, sk0, config.num_levels, config.pooling_factor, config.topk)
    level, index, pos_map = (select_tiles_op(*args) if torch.compiler.is_compiling()
                             else select_tiles(*args))
    return Selection(level, index), pos_map


def select_from_base_scores(sq0: Tensor, sk0: Tensor, config: LighthouseConfig) -> Selection:
    """:func:`select_with_map` without the map."""
    return select_with_map(sq0, sk0, config)[0]
