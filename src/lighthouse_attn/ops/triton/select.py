"""Triton twin of ``ops/reference/select.py``: the whole tile-stratified cascade in one launch.

One program per (batch row x selecting head, tile). It first sets the tile's part of the
position map to -1 (its windows at every level), then makes three passes over the levels:

1. top-down, choose: per level, read the window-max scores of the candidates straight from the
   level-0 scores, pick ``A`` and ``B`` with a radix search on the fp32 bit patterns (ties to
   the lower index, as the reference), and make the chosen entries' children the next level's
   candidates (compacted through a small scratch row);
2. bottom-up, count: how many gathered entries each candidate stands for (itself, plus its
   subtree when chosen);
3. top-down, place: a prefix sum of those counts gives every entry's gathered position; a
   chosen entry comes right after its subtree (SPEC section 4), so no sort is needed.

The tile's entries form one contiguous segment of the gathered sequence (tiles cover
consecutive base windows).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...config import HALF, SEGMENTS, TILE, LighthouseConfig
from ..reference.select import look_back
from ..types import Selection
from .gather_scatter import map_len
from .launch import fast, next_pow2

WARPS = 8  # warps per (head, tile) program of the cascade


@triton.jit
def _window_max(s_row, cand, valid, W: tl.constexpr):
    """max of the level-0 scores over each candidate's window of W tokens (-1 where invalid),
    read as coalesced (candidates, chunk) blocks."""
    WC: tl.constexpr = tl.constexpr(W if W < 16 else 16)
    acc = tl.full(cand.shape, -1.0, tl.float32)
    for j0 in tl.static_range(0, W, WC):
        x = tl.load(s_row + cand[:, None] * W + j0 + tl.arange(0, WC)[None, :],
                    mask=valid[:, None], other=-1.0)
        acc = tl.maximum(acc, tl.max(x, 1))
    return acc


@triton.jit
def _sort_bits(score, valid):
    """int32 keys that order like the scores (scores are >= 0; -0.0 counts as 0); -1 invalid."""
    bits = score.to(tl.int32, bitcast=True)
    bits = tl.where(bits < 0, 0, bits)
    return tl.where(valid, bits, -1)


@triton.jit
def _top(keys, K: tl.constexpr, DIGIT: tl.constexpr):
    """Mask of the K largest keys (keys in [-1, 2^31), at least K of them >= 0), ties to the
    lower position. A radix search finds the K-th largest key ``lo``, DIGIT bits per round:
    each round counts the keys above 2^DIGIT thresholds at once (one block reduction). It
    stops early once exactly K keys lie at or above a threshold (no tie to break), and starts
    below the digits that all valid keys share (those of their min and max: norms of similar
    size share sign, exponent and leading mantissa bits), which cut the cascade by a quarter
    on an H100 (measured in the layer: 31 to 23.5 us at 32K, K=512)."""
    top = tl.max(keys, 0)
    diff = top ^ tl.min(tl.where(keys >= 0, keys, top), 0)
    r0 = top * 0  # scalar int32 zero: rounds whose digit every valid key shares
    for r in tl.static_range(32 // DIGIT):
        r0 += ((diff >> (32 - DIGIT * (r + 1))) == 0).to(tl.int32)
    shift0 = (32 - DIGIT * r0).to(tl.int64)
    lo = ((top.to(tl.int64) >> shift0) << shift0).to(tl.int32)  # the shared digits
    exact = r0 < 0
    d = tl.arange(0, 1 << DIGIT)
    for r in range(32 // DIGIT):  # a loop, not unrolled: the cascade's code stays small
        if not exact and r >= r0:
            shift = 32 - DIGIT * (r + 1)
            t = lo + (d << shift)  # the top round's upper half wraps: masked
            cnt = tl.sum((keys[:, None] >= t[None, :]).to(tl.int32), 0)
            ok = (cnt >= K) & ((r > 0) | (d < (1 << (DIGIT - 1))))
            pick = tl.max(tl.where(ok, d, 0), 0)
            lo = lo + (pick << shift)
            exact = tl.sum(tl.where(d == pick, cnt, 0), 0) == K
    above = keys > lo
    need = K - tl.sum(above.to(tl.int32), 0)
    tied = keys == lo
    return tl.where(exact, keys >= lo, above | (tied & (tl.cumsum(tied.to(tl.int32), 0) <= need)))


@triton.jit
def _pick(sq_row, sk_row, cand, valid, W: tl.constexpr, HALF_: tl.constexpr,
          DIGIT: tl.constexpr):
    """Chosen mask among the candidates (window ``W`` tokens): A by sq, then B by sk."""
    kq = _sort_bits(_window_max(sq_row, cand, valid, W), valid)
    in_a = _top(kq, HALF_, DIGIT) & valid
    kk = _sort_bits(_window_max(sk_row, cand, valid, W), valid & (in_a == 0))
    return in_a | (_top(kk, HALF_, DIGIT) & valid)


@triton.jit
def _causal_keys(s_row, pre_row, cand, valid, W: tl.constexpr, WMAX: tl.constexpr,
                 PRE: tl.constexpr):
    """Sort keys of the causal scores: max of the level-0 scores over ``[cand W - W, cand W]``
    (the window before the candidate and its first token; -1 where invalid). With ``PRE`` the
    window before candidate 0 is the last ``W`` of the ``WMAX`` scores at ``pre_row`` (the end
    of the previous chunk under context parallelism)."""
    before = _window_max(s_row, cand - 1, valid & (cand > 0), W)
    if PRE:
        last = tl.max(tl.load(pre_row + WMAX - W + tl.arange(0, W)), 0)
        before = tl.where(valid & (cand == 0), last, before)
    first = tl.load(s_row + cand * W, mask=valid, other=-1.0)
    return _sort_bits(tl.maximum(before, first), valid)


@triton.jit
def _beats_recent(scratch, keys, G):
    """``keys[i]`` is larger than every ``keys[j]``, ``i - G < j < i`` (through scratch)."""
    offs = tl.arange(0, keys.shape[0])
    tl.store(scratch + offs, keys)
    tl.debug_barrier()
    best = tl.full(keys.shape, -1, tl.int32)
    for j in range(1, G):
        best = tl.maximum(best, tl.load(scratch + offs - j, mask=offs >= j, other=-1))
    tl.debug_barrier()
    return keys > best


@triton.jit
def _pick_causal(sq_row, sk_row, pq_row, pk_row, scratch, cand, valid, n, G, W: tl.constexpr,
                 WMAX: tl.constexpr, PRE: tl.constexpr, SEG: tl.constexpr,
                 BUDGET: tl.constexpr):
    """Causal chosen mask among ``n`` candidates in ascending order (``ops/reference/select.py``'s
    ``pick_causal``): they want refinement when a score beats the ``G - 1`` before; each of
    ``SEG`` segments refines ``BUDGET`` in order, filling its end when wants run short."""
    want = _beats_recent(scratch, _causal_keys(sq_row, pq_row, cand, valid, W, WMAX, PRE), G)
    want = (want | _beats_recent(scratch, _causal_keys(sk_row, pk_row, cand, valid, W, WMAX,
                                                       PRE), G)) & valid
    i = tl.arange(0, cand.shape[0])
    seg = SEG * i // n
    start = (seg * n + SEG - 1) // SEG
    end = ((seg + 1) * n + SEG - 1) // SEG
    w = want.to(tl.int32)
    cum = tl.cumsum(w, 0)
    tl.store(scratch + i, cum)
    tl.debug_barrier()
    before = cum - w - tl.load(scratch + start - 1, mask=valid & (start > 0), other=0)
    tl.debug_barrier()
    forced = end - i <= BUDGET - tl.minimum(before, BUDGET)
    return (forced | (want & (before < BUDGET))) & valid


@triton.jit
def _by_rank(scratch, values, chosen, n: tl.constexpr):
    """The values of the chosen entries in rank order (``n`` of them), through scratch."""
    rank = tl.cumsum(chosen.to(tl.int32), 0) - 1
    tl.store(scratch + rank, values, mask=chosen)
    tl.debug_barrier()
    out = tl.load(scratch + tl.arange(0, n))
    tl.debug_barrier()  # the scratch row is reused next
    return out


@triton.jit
def _gather_rank(scratch, values, NV: tl.constexpr, chosen):
    """``values[rank]`` (``values`` is ``NV`` long) for each chosen entry (0 elsewhere)."""
    tl.store(scratch + tl.arange(0, NV), values)
    tl.debug_barrier()
    rank = tl.cumsum(chosen.to(tl.int32), 0) - 1
    out = tl.load(scratch + rank, mask=chosen, other=0)
    tl.debug_barrier()
    return out


@triton.jit
def _emit(level_ptr, index_ptr, map_ptr, out_row, map_row, base, pos, index, valid,
          lvl: tl.constexpr, N, LOG2P: tl.constexpr, SEL: tl.constexpr):
    """Write entries of level ``lvl`` at gathered positions ``base + pos`` (to the map, and to
    the selection if SEL)."""
    if SEL:
        tl.store(level_ptr + out_row + base + pos, tl.full(pos.shape, lvl, tl.int64),
                 mask=valid)
        tl.store(index_ptr + out_row + base + pos, index.to(tl.int64), mask=valid)
    level_off = 0
    for i in tl.static_range(lvl):
        level_off += N >> (i * LOG2P)
    tl.store(map_ptr + map_row + level_off + index, (base + pos).to(tl.int32), mask=valid)


@triton.jit
def _select_kernel(sq_ptr, sk_ptr, pq_ptr, pk_ptr, level_ptr, index_ptr, map_ptr, work_ptr,
                        N, S, M, C, heads, sk_div, G_C, pq_b, pk_b,
                        L: tl.constexpr, P: tl.constexpr, LOG2P: tl.constexpr,
                        BLOCK_C: tl.constexpr, NMAX: tl.constexpr, TILE_: tl.constexpr,
                        HALF_: tl.constexpr, DIGIT: tl.constexpr, SEL: tl.constexpr,
                        FILL: tl.constexpr, CAUSAL: tl.constexpr, SEG: tl.constexpr,
                        PRE: tl.constexpr):
    tile = tl.program_id(0)
    row = tl.program_id(1)
    n_tiles = tl.num_programs(0)
    sk_row_id = (row // heads) * (heads // sk_div) + (row % heads) // sk_div
    sq_row = sq_ptr + row.to(tl.int64) * N
    sk_row = sk_ptr + sk_row_id.to(tl.int64) * N
    # the previous chunk's last window: rows of P^(L-1) scores, batch rows pq_b / pk_b apart
    pq_row = pq_ptr + (row // heads).to(tl.int64) * pq_b + (row % heads) * P**(L - 1)
    kv_heads = heads // sk_div
    pk_row = (pk_ptr + (sk_row_id // kv_heads).to(tl.int64) * pk_b
              + (sk_row_id % kv_heads) * P**(L - 1))
    work = work_ptr + (row.to(tl.int64) * n_tiles + tile) * ((2 * L - 1) * NMAX)
    scratch = work + (2 * L - 2) * NMAX  # slot 2(l-1): candidates of level l, 2l-1: sizes
    E = C + (L - 1) * TILE_ * P
    out_row = row.to(tl.int64) * S
    map_row = row.to(tl.int64) * M
    base = tile * E
    offs_c = tl.arange(0, BLOCK_C)
    valid_c = offs_c < C
    cand_c = tile * C + offs_c
    r2 = tl.arange(0, TILE_)[:, None]
    j2 = tl.arange(0, P)[None, :]

    # 0. the tile's part of the map (its windows at every level) starts at -1
    level_off = 0
    for lvl in tl.static_range(L):
        n_lvl = C * P**(L - 1 - lvl)
        for i in range(0, n_lvl, FILL):
            f = i + tl.arange(0, FILL)
            tl.store(map_ptr + map_row + level_off + tile * n_lvl + f,
                     tl.full((FILL,), -1, tl.int32), mask=f < n_lvl)
        level_off += N >> (lvl * LOG2P)
    tl.debug_barrier()

    # 1. top-down: choose at every level; keep candidates and choices in the work rows
    if CAUSAL:
        chosen_c = _pick_causal(sq_row, sk_row, pq_row, pk_row, scratch, cand_c, valid_c, C,
                                G_C, P**(L - 1), P**(L - 1), PRE, SEG, TILE_ // SEG)
    else:
        chosen_c = _pick(sq_row, sk_row, cand_c, valid_c, P**(L - 1), HALF_, DIGIT)
    cand = (_by_rank(scratch, cand_c, chosen_c, TILE_)[:, None] * P + j2).reshape(TILE_ * P)
    for lvl in tl.static_range(L - 2, 0, -1):
        if CAUSAL:
            chosen = _pick_causal(sq_row, sk_row, pq_row, pk_row, scratch, cand, cand >= 0,
                                  TILE_ * P, 2 * P, P**lvl, P**(L - 1), PRE, SEG,
                                  TILE_ // SEG)
        else:
            chosen = _pick(sq_row, sk_row, cand, cand >= 0, P**lvl, HALF_, DIGIT)
        tl.store(work + (2 * lvl - 2) * NMAX + tl.arange(0, TILE_ * P), cand)
        tl.store(work + (2 * lvl - 1) * NMAX + tl.arange(0, TILE_ * P), chosen.to(tl.int32))
        cand = (_by_rank(scratch, cand, chosen, TILE_)[:, None] * P + j2).reshape(TILE_ * P)
    tl.debug_barrier()

    # 2. bottom-up: entries each candidate emits (itself, plus its subtree when chosen)
    group = tl.full((TILE_,), P, tl.int32)  # level 1: every chosen entry emits P base tokens
    for lvl in tl.static_range(1, L - 1):
        chosen = tl.load(work + (2 * lvl - 1) * NMAX + tl.arange(0, TILE_ * P)) > 0
        size = 1 + tl.where(chosen, _gather_rank(scratch, group, TILE_, chosen), 0)
        tl.store(work + (2 * lvl - 1) * NMAX + tl.arange(0, TILE_ * P), size)
        tl.debug_barrier()
        group = tl.sum(tl.load(work + (2 * lvl - 1) * NMAX + r2 * P + j2), 1)
    size_c = 1 + tl.where(chosen_c, _gather_rank(scratch, group, TILE_, chosen_c), 0)
    size_c = tl.where(valid_c, size_c, 0)

    # 3. top-down: gathered positions (a chosen entry follows its subtree)
    start = tl.cumsum(size_c, 0) - size_c
    _emit(level_ptr, index_ptr, map_ptr, out_row, map_row, base, start + size_c - 1, cand_c,
          valid_c, L - 1, N, LOG2P, SEL)
    first = _by_rank(scratch, start, chosen_c, TILE_)
    for lvl in tl.static_range(L - 2, 0, -1):
        size = tl.load(work + (2 * lvl - 1) * NMAX + r2 * P + j2)
        start = first[:, None] + tl.cumsum(size, 1) - size
        _emit(level_ptr, index_ptr, map_ptr, out_row, map_row, base, start + size - 1,
              tl.load(work + (2 * lvl - 2) * NMAX + r2 * P + j2), size > 0, lvl, N, LOG2P, SEL)
        first = _by_rank(scratch, start.reshape(TILE_ * P), size.reshape(TILE_ * P) > 1,
                         TILE_)
    _emit(level_ptr, index_ptr, map_ptr, out_row, map_row, base, first[:, None] + j2,
          cand.reshape(TILE_, P), j2 >= 0, 0, N, LOG2P, SEL)


def _rows_of_scores(x: Tensor) -> Tensor:
    """``x`` ``(B, rows, W)`` as the kernel reads it: each batch row's rows of ``W``
    consecutive scores (a view, such as a slice of rows, where it already is; else a copy)."""
    return x if x.stride(2) == 1 and x.stride(1) == x.shape[2] else x.contiguous()


def select_tiles(sq0: Tensor, sk0: Tensor, num_levels: int, pooling_factor: int, topk: int,
                 with_selection: bool = True, causal: bool = False,
                 prefix: tuple[Tensor, Tensor] | None = None
                 ) -> tuple[Tensor | None, Tensor | None, Tensor]:
    """Launch the cascade: ``(level, index, pos_map)`` (see :func:`select_with_map`); level
    and index are ``None`` unless ``with_selection`` (the kernels need the map alone);
    ``causal`` picks with the causal rule instead of the paper's top-k, reading the window
    before the first position from ``prefix`` where given."""
    L, p, T = num_levels, pooling_factor, topk // TILE
    B, heads, N = sq0.shape
    C = N // p ** (L - 1) // T
    E = C + (L - 1) * TILE * p
    pos_map = torch.empty(B, heads, map_len(N, p, L), dtype=torch.int32, device=sq0.device)
    level = index = None
    if with_selection:
        level = torch.empty(B, heads, T * E, dtype=torch.int64, device=sq0.device)
        index = torch.empty_like(level)
    nmax = max(next_pow2(C), TILE * p)
    work = torch.empty(B * heads * T, (2 * L - 1) * nmax, dtype=torch.int32, device=sq0.device)
    sq0, sk0 = sq0.contiguous(), sk0.contiguous()
    pq, pk = (_rows_of_scores(x) for x in prefix) if prefix is not None else (sq0, sk0)
    fast(_select_kernel)[(T, B * heads)](
        sq0, sk0, pq, pk, pos_map if level is None else level,
        pos_map if index is None else index, pos_map, work,
        N, T * E, pos_map.shape[2], C, heads, heads // sk0.shape[1], look_back(C),
        pq.stride(0), pk.stride(0),
        L=L, P=p, LOG2P=p.bit_length() - 1, BLOCK_C=next_pow2(C), NMAX=nmax,
        TILE_=TILE, HALF_=HALF, DIGIT=4, SEL=with_selection, FILL=1024, CAUSAL=causal,
        SEG=SEGMENTS, PRE=prefix is not None, num_warps=WARPS)
    return level, index, pos_map


@torch.library.custom_op("lighthouse_attn::select_tiles", mutates_args=())
def select_tiles_op(sq0: Tensor, sk0: Tensor, num_levels: int, pooling_factor: int, topk: int,
                    causal: bool, prefix_q: Tensor | None = None,
                    prefix_k: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`select_tiles` as an opaque op for torch.compile."""
    prefix = (prefix_q, prefix_k) if prefix_q is not None else None
    return select_tiles(sq0, sk0, num_levels, pooling_factor, topk, causal=causal,
                        prefix=prefix)


@select_tiles_op.register_fake
def _(sq0, sk0, num_levels, pooling_factor, topk, causal, prefix_q=None, prefix_k=None):
    B, heads, N = sq0.shape
    S = N // pooling_factor ** (num_levels - 1) + (num_levels - 1) * pooling_factor * topk
    out = sq0.new_empty(B, heads, S, dtype=torch.int64)
    pos_map = sq0.new_empty(B, heads, map_len(N, pooling_factor, num_levels),
                            dtype=torch.int32)
    return out, torch.empty_like(out), pos_map


def select_with_map(sq0: Tensor, sk0: Tensor, config: LighthouseConfig,
                    with_selection: bool = True, prefix: tuple[Tensor, Tensor] | None = None
                    ) -> tuple[Selection | None, Tensor]:
    """Run the cascade on level-0 scores: ``sq0`` ``(B, H', N)`` fp32 and ``sk0``
    ``(B, H'/r, N)`` fp32 (``r`` query heads per key head: the ``expand`` GQA mode passes the
    un-repeated key scores). Returns the same :class:`Selection` as
    ``ops.reference.select.select_from_scores`` on the level scores of ``config.selection``
    (``None`` unless ``with_selection``), and its inverse position map ``(B, H', M)`` int32
    (see ``gather_scatter.build_position_map``). ``pooling_factor`` must be a power of two and
    ``L <= 7``. ``prefix``: with the causal selection, the ``p^(L-1)`` level-0 scores before
    the first position, ``(B, H', p^(L-1))`` and ``(B, H'/r, p^(L-1))`` (a chunk under context
    parallelism); without it nothing precedes the first position."""
    if prefix is not None and config.selection != "causal":
        raise ValueError("prefix scores are read by the causal selection only; use "
                         "selection='causal' or leave prefix out")
    if config.num_levels == 1:
        B, heads, N = sq0.shape
        index = torch.arange(N, device=sq0.device).expand(B, heads, N).contiguous()
        return Selection(torch.zeros_like(index), index), index.to(torch.int32)
    args = (sq0, sk0, config.num_levels, config.pooling_factor, config.topk)
    causal = config.selection == "causal"
    if torch.compiler.is_compiling():
        level, index, pos_map = select_tiles_op(*args, causal, *(prefix or ()))
    else:
        level, index, pos_map = select_tiles(*args, with_selection, causal, prefix)
    return (Selection(level, index) if level is not None else None), pos_map
