"""Triton twin of ``ops.rope.apply_rope_reference``: the rotation of every ``(position, head)``
row of q and k in one launch, forward and backward (the backward rotates the gradients back).
Products and sums are rounded in fp32 one by one, as the reference's separate kernels round
them (no fused multiply-add), and the result once to the input's dtype: the two agree bit for
bit. Each output, and each gradient, is laid out in memory as its input, in the input's order
of dimensions where it is not dense: a projection's ``(B, N, H, D)`` memory stays so, and the
transpose back to ``(B, N, H * D)`` is a view.

The forward can also score the rotated rows as ``scores.row_norms_and_means`` does (their fp32
norms, and the means of aligned windows of ``W`` rows), from the values it writes: the
Lighthouse op then needs no pass of its own over q and k before selecting.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import accumulator, cdiv, fast, next_pow2
from .scores import means_apply

POSITIONS = 16  # rows a program rotates at a time


@triton.jit
def rotate(x1, x2, cs, sn, BACK: tl.constexpr):
    """RoPE of rows by halves: ``x1``, ``x2`` (fp32, columns ``[0, D/2)`` and ``[D/2, D)``)
    rotated by their ``cos``, ``sin``, or with BACK rotated back (the adjoint), each product
    and sum rounded in fp32 as the reference's separate kernels round them (launch with
    ``enable_fp_fusion=False``). The RoPE kernel and the rotating pool and spread
    (``gather_scatter``) share it."""
    if BACK:
        o1 = x1 * cs + x2 * sn
        o2 = x2 * cs - x1 * sn
    else:
        o1 = x1 * cs - x2 * sn
        o2 = x2 * cs + x1 * sn
    return o1, o2


@triton.jit
def _rotate_rows(x_ptr, o_ptr, c_ptr, s_ptr, n_ptr, m_ptr, blk, bh, N, H, HALF,
                 sxb, sxh, sxn, sob, soh, son,
                 BACK: tl.constexpr, ROWS: tl.constexpr, WIN: tl.constexpr,
                 SCORES: tl.constexpr, MEANS: tl.constexpr, SLOTS: tl.constexpr,
                 WRITE: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Rows ``[blk * WIN, (blk + 1) * WIN)`` of row set ``bh = b * H + h``, ROWS at a time,
    rotated (written if WRITE); with SCORES their norms, with MEANS (chunks of whole windows)
    also their mean, both laid out as ``(B * SLOTS, H, N / SLOTS)`` batch rows ``(b,
    chunk)`` (``N / SLOTS`` rows a chunk; one chunk: ``(B, H, N)``)."""
    CH = N // SLOTS
    b = bh // H
    h = bh % H
    d = tl.arange(0, BLOCK)
    md = d < HALF
    x0 = x_ptr + b.to(tl.int64) * sxb + h.to(tl.int64) * sxh
    o0 = o_ptr + b.to(tl.int64) * sob + h.to(tl.int64) * soh
    sum1 = tl.zeros((BLOCK,), ACC)
    sum2 = tl.zeros((BLOCK,), ACC)
    for c in tl.static_range(WIN // ROWS):
        n = blk * WIN + c * ROWS + tl.arange(0, ROWS)
        mn = n < N
        m = mn[:, None] & md[None, :]
        x = x0 + n[:, None].to(tl.int64) * sxn + d[None, :]
        x1 = tl.load(x, mask=m, other=0.0).to(tl.float32)
        x2 = tl.load(x + HALF, mask=m, other=0.0).to(tl.float32)
        t = n[:, None].to(tl.int64) * HALF + d[None, :]
        cs = tl.load(c_ptr + t, mask=m, other=0.0)
        sn = tl.load(s_ptr + t, mask=m, other=0.0)
        o1, o2 = rotate(x1, x2, cs, sn, BACK)
        o1 = o1.to(o_ptr.dtype.element_ty)
        o2 = o2.to(o_ptr.dtype.element_ty)
        if WRITE:
            o = o0 + n[:, None].to(tl.int64) * son + d[None, :]
            tl.store(o, o1, mask=m)
            tl.store(o + HALF, o2, mask=m)
        if SCORES:  # of the values just written, summed in fp64 as the norm kernel sums
            a1 = o1.to(tl.float64)
            a2 = o2.to(tl.float64)
            sq = tl.sum(a1 * a1, axis=1) + tl.sum(a2 * a2, axis=1)
            row = ((b * SLOTS + n // CH) * H + h).to(tl.int64) * CH + n % CH
            tl.store(n_ptr + row, tl.sqrt(sq).to(tl.float32), mask=mn)
        if MEANS:
            sum1 += tl.sum(o1.to(ACC), axis=0)
            sum2 += tl.sum(o2.to(ACC), axis=0)
    if MEANS:
        first = blk * WIN
        row = ((b * SLOTS + first // CH) * H + h).to(tl.int64) * (CH // WIN) + first % CH // WIN
        mp = m_ptr + row * (2 * HALF) + d
        tl.store(mp, (sum1 * (1.0 / WIN)).to(m_ptr.dtype.element_ty), mask=md)
        tl.store(mp + HALF, (sum2 * (1.0 / WIN)).to(m_ptr.dtype.element_ty), mask=md)


@triton.jit
def _rope_kernel(a_ptr, b_ptr, oa_ptr, ob_ptr, c_ptr, s_ptr, na_ptr, nb_ptr, ma_ptr, mb_ptr,
                 N, Ha, Hb, rows_a, HALF, sab, sah, san, sbb, sbh, sbn,
                 soab, soah, soan, sobb, sobh, sobn,
                 BACK: tl.constexpr, ROWS: tl.constexpr, WIN: tl.constexpr,
                 SCORES: tl.constexpr, MEANS: tl.constexpr, SLOTS: tl.constexpr,
                 WRITE: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    # program (blk, bh): row set bh of a (q) below rows_a = B * Ha, else of b (k)
    blk = tl.program_id(0)
    bh = tl.program_id(1)
    if bh < rows_a:
        _rotate_rows(a_ptr, oa_ptr, c_ptr, s_ptr, na_ptr, ma_ptr, blk, bh, N, Ha, HALF,
                     sab, sah, san, soab, soah, soan, BACK, ROWS, WIN, SCORES, MEANS, SLOTS,
                     WRITE, BLOCK, ACC)
    else:
        _rotate_rows(b_ptr, ob_ptr, c_ptr, s_ptr, nb_ptr, mb_ptr, blk, bh - rows_a, N, Hb,
                     HALF, sbb, sbh, sbn, sobb, sobh, sobn, BACK, ROWS, WIN, SCORES, MEANS,
                     SLOTS, WRITE, BLOCK, ACC)


def _launch(a: Tensor, b: Tensor, cos: Tensor, sin: Tensor, back: bool,
            window: int | None, strides: tuple | None = None, chunks: int = 1,
            write: bool = True) -> tuple[Tensor, ...]:
    """``a`` ``(B, H_a, N, D)`` and ``b`` ``(B, H_b, N, D)`` rotated (``back``: rotated back)
    in one launch, into tensors of ``strides`` (two tuples), by default laid out as ``a`` and
    ``b`` (in their order of dimensions where not dense); ``window``: also their scores
    (``0``: norms only; ``W``: norms and the means of windows of ``W`` rows), of the
    ``chunks`` equal chunks of the sequence as batch rows ``(b, chunk)``; without ``write``
    only the scores (the rotated tensors are returned unwritten)."""
    a, b = (x if x.stride(-1) == 1 else x.contiguous() for x in (a, b))
    (B, Ha, N, D), Hb = a.shape, b.shape[1]
    if not write:
        oa, ob = a, b  # not written
    elif strides is None:
        oa, ob = torch.empty_like(a), torch.empty_like(b)
    else:
        oa, ob = (torch.empty_strided(x.shape, st, dtype=x.dtype, device=x.device)
                  for x, st in zip((a, b), strides))
    scores = window is not None
    means = bool(window)
    n = N // chunks
    na, nb = ((torch.empty(B * chunks, H, n, dtype=torch.float32, device=a.device)
               for H in (Ha, Hb)) if scores else (oa, ob))
    ma, mb = ((a.new_empty(B * chunks, H, n // window, D) for H in (Ha, Hb)) if means
              else (oa, ob))
    win = window if means else POSITIONS
    fast(_rope_kernel)[(cdiv(N, win), B * (Ha + Hb))](
        a, b, oa, ob, cos.contiguous(), sin.contiguous(), na, nb, ma, mb, N, Ha, Hb, B * Ha,
        D // 2, *a.stride()[:3], *b.stride()[:3], *oa.stride()[:3], *ob.stride()[:3],
        BACK=back, ROWS=POSITIONS, WIN=win, SCORES=scores, MEANS=means, SLOTS=chunks,
        WRITE=write, BLOCK=next_pow2(D // 2), ACC=accumulator(a.dtype), num_warps=4,
        enable_fp_fusion=False)
    return (oa, ob) + ((na, nb) if scores else ()) + ((ma, mb) if means else ())


def check_tables(x: Tensor, cos: Tensor, sin: Tensor) -> None:
    """``ValueError`` unless ``x`` ``(B, H, N, D)`` has an even ``D`` and ``cos``, ``sin`` are
    ``(N, D/2)``."""
    if x.shape[-1] % 2 or cos.shape != (x.shape[2], x.shape[3] // 2) or sin.shape != cos.shape:
        raise ValueError(f"RoPE needs an even head dim and tables of shape (N, D/2) = "
                         f"{(x.shape[2], x.shape[3] // 2)}; got x {tuple(x.shape)}, "
                         f"cos {tuple(cos.shape)}, sin {tuple(sin.shape)}")


class _RopePair(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, window: int | None,
                chunks: int):
        ctx.save_for_backward(cos, sin)
        out = _launch(q, k, cos, sin, back=False, window=window, chunks=chunks)
        ctx.strides = (out[0].stride(), out[1].stride())  # the gradients' layouts
        ctx.mark_non_differentiable(*out[2:])
        return out

    @staticmethod
    def backward(ctx, dq: Tensor, dk: Tensor, *unused) -> tuple:
        cos, sin = ctx.saved_tensors
        return (*_launch(dq, dk, cos, sin, back=True, window=None, strides=ctx.strides),
                None, None, None, None)


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE of one tensor ``x`` ``(B, H, N, D)``, as :func:`rope_pair` (no second tensor)."""
    check_tables(x, cos, sin)
    none = x.new_empty(x.shape[0], 0, *x.shape[2:])
    return _RopePair.apply(x, none, cos, sin, None, 1)[0]


def rope_pair(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """RoPE of ``q`` ``(B, H, N, D)`` and ``k`` ``(B, H_kv, N, D)`` (same dtype, fp32, bf16 or
    fp16; ``D`` even) with fp32 ``cos``, ``sin`` ``(N, D/2)``, in one launch each way:
    differentiable in ``q`` and ``k``, each laid out as its input (module doc)."""
    check_tables(q, cos, sin)
    check_tables(k, cos, sin)
    return _RopePair.apply(q, k, cos, sin, None, 1)


def _check_scored(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, window: int | None,
                  chunks: int) -> None:
    check_tables(q, cos, sin)
    check_tables(k, cos, sin)
    N = q.shape[2]
    if chunks < 1 or N % chunks:
        raise ValueError(f"chunks must divide the sequence length {N}; got {chunks}")
    if window is not None and (not means_apply(window, q.shape[-1]) or N // chunks % window):
        raise ValueError(f"window means need a window that is a multiple of 16 and divides "
                         f"each chunk, and D <= 128; got window {window}, {chunks} chunk(s), "
                         f"shape {tuple(q.shape)}")


def rope_pair_scored(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, window: int | None,
                     chunks: int = 1) -> tuple[Tensor, ...]:
    """:func:`rope_pair` and the scores of the rotated rows, as ``scores.row_norms_pair``
    (``window`` ``None``) or ``scores.row_norms_and_means`` (``window`` ``W``) would make
    them from its outputs: ``(q, k, q_norms, k_norms[, q_means, k_means])``. The norms are
    equal bit for bit for fp16/bf16 (fp64 sums); the means are summed in fp32 in another
    order, so they may differ in the last bit. With ``chunks`` ``C`` the scores are those of
    the ``C`` equal chunks of the sequence as batch rows ``(b, chunk)`` (``layout.as_batch``
    of them, contiguous): ``(B C, H, N / C)`` and ``(B C, H, N / (C W), D)``. Means need
    ``scores.means_apply(window, D)`` and chunks of whole windows."""
    _check_scored(q, k, cos, sin, window, chunks)
    return _RopePair.apply(q, k, cos, sin, window or 0, chunks)


def rope_scores(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, window: int | None,
                chunks: int = 1) -> tuple[Tensor, ...]:
    """The scores of :func:`rope_pair_scored` alone, ``(q_norms, k_norms[, q_means,
    k_means])``, with nothing else written: for the pool and spread kernels that rotate q
    and k themselves (``gather_scatter``'s ``rope``)."""
    _check_scored(q, k, cos, sin, window, chunks)
    with torch.no_grad():
        return _launch(q, k, cos, sin, back=False, window=window or 0, chunks=chunks,
                       write=False)[2:]
