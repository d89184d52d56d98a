"""Triton kernels against their torch twins (the CPU interpreter in CI, the GPU when present).

Sizes are small: the interpreter runs each program in Python."""

import pytest
import spec_oracle
import torch
from conftest import rand_qkv

pytest.importorskip("triton")

from lighthouse_attn import LighthouseConfig, lighthouse_attention, select
from lighthouse_attn.ops.reference.gather import gather
from lighthouse_attn.ops.reference.pyramid import build_pyramid
from lighthouse_attn.ops.reference.scatter import scatter
from lighthouse_attn.ops.reference.scores import level_scores, row_norms
from lighthouse_attn.ops.reference.select import select_from_scores
from lighthouse_attn.ops.triton.gather_scatter import (
    WindowPlan,
    gather_plan,
    pool_op,
    pool_windows,
    pool_windows_differentiable,
    position_map,
    scatter_plan,
    spread_op,
    spread_windows,
    spread_windows_differentiable,
)
from lighthouse_attn.ops.triton.scores import row_norms_and_means, row_norms_pair
from lighthouse_attn.ops.triton.select import select_with_map

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def qkv(**kw):
    return rand_qkv(device=DEV, **kw)


def cfg(backend, **kw):
    base = dict(num_levels=2, pooling_factor=2, topk=128)
    base.update(kw)
    return LighthouseConfig(backend=backend, **base)


def both(kw, q, k, v=None):
    a = select(q, k, cfg("torch", **kw), v=v)
    b = select(q, k, cfg("triton", **kw), v=v)
    return a, b


@pytest.mark.parametrize("kw,N", [
    (dict(), 512),
    (dict(num_levels=3, pooling_factor=4, topk=128), 2048),
    (dict(num_levels=4, pooling_factor=2, topk=128), 1024),
    (dict(num_levels=3, pooling_factor=2, topk=384), 3072),  # 3 tiles, C = 256
    (dict(num_levels=2, pooling_factor=2, topk=128), 768),   # C = 384: not a power of two
])
def test_selection_identical_to_torch(kw, N):
    q, k, _ = qkv(B=2 if N <= 768 else 1, H=2 if N <= 1024 else 1, N=N, D=8, seed=20)
    a, b = both(kw, q.to(DEV), k.to(DEV))
    assert torch.equal(a.level, b.level) and torch.equal(a.index, b.index)


@pytest.mark.parametrize("gqa", ["expand", "shared"])
@pytest.mark.parametrize("scorer", ["norm", "dilated", "affinity"])
def test_selection_gqa_scorers_identical(gqa, scorer):
    q, k, v = (x.to(DEV) for x in qkv(B=1, H=4, Hkv=2, N=512, D=8, seed=21))
    a, b = both(dict(gqa=gqa, scorer=scorer, dilation=2), q, k, v)
    assert torch.equal(a.level, b.level) and torch.equal(a.index, b.index)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_row_norms_kernel_bitwise_equal(dtype):
    g = torch.Generator().manual_seed(30)
    x = torch.randn(2, 3, 200, 72, generator=g).to(DEV, dtype)
    y = torch.randn(2, 1, 200, 72, generator=g).to(DEV, dtype)
    x[0, 0, :5] *= 1e3  # wide dynamic range within rows
    x[1, 2, 7] = 0
    a, b = row_norms_pair(x, y)
    assert torch.equal(a, row_norms(x)) and torch.equal(b, row_norms(y))
    strided = x.transpose(1, 2).contiguous().transpose(1, 2)  # (B, N, H, D) memory, as models
    assert torch.equal(row_norms_pair(strided, y)[0], row_norms(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("window", [16, 64])
def test_row_norms_and_window_means(dtype, window):
    """The norm kernel's second product: the mean of every aligned window (the pyramid's
    coarsest level), from strided (B, N, H, D) memory, with the same bitwise norms."""
    g = torch.Generator().manual_seed(31)
    x = torch.randn(2, 3, 256, 72, generator=g).to(DEV, dtype)
    y = torch.randn(2, 1, 256, 72, generator=g).to(DEV, dtype)
    strided = x.transpose(1, 2).contiguous().transpose(1, 2)
    a, b, mx, my = row_norms_and_means(strided, y, window)
    assert torch.equal(a, row_norms(x)) and torch.equal(b, row_norms(y))
    tol = {torch.bfloat16: 8e-3, torch.float32: 1e-6, torch.float64: 1e-15}[dtype]
    for m, z in ((mx, x), (my, y)):
        ref = z.double().view(*z.shape[:2], 256 // window, window, 72).mean(-2)
        assert m.dtype == dtype and m.shape == ref.shape
        torch.testing.assert_close(m.double(), ref, rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="multiple of 16"):
        row_norms_and_means(x, y, 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pool_copies_given_coarsest_means(dtype):
    """``pool_windows(coarsest=...)`` (the means from the norm kernel) matches pooling every
    level."""
    c = cfg("torch", num_levels=3, pooling_factor=4)
    N = c.min_seq_len
    q, k, v = qkv(B=1, H=2, Hkv=1, N=N, D=8, dtype=dtype, seed=35)
    sel = select(q, k, c)
    pm = position_map(sel, N, 4, 3)
    S = sel.level.shape[-1]
    args = ([q, k, v], pm, gather_plan(S, [2, 2, 2], [1, 2, 2], 4, 3))
    means = row_norms_and_means(q, k, 16)[2:]
    tol = 1e-6 if dtype == torch.float32 else 8e-3
    for a, b in zip(pool_windows(*args), pool_windows(*args, coarsest=means)):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    # the given means are what lands on the coarsest entries (and only there)
    coarse = (sel.level == 2)[..., None].to(dtype)
    moved = pool_windows(*args, coarsest=[m + 4 for m in means])
    for a, b, shift in zip(pool_windows(*args), moved, (4, 4, 0)):  # v's means were not given
        torch.testing.assert_close(b - a, shift * coarse.expand_as(a), rtol=0, atol=5 * tol)
    with pytest.raises(ValueError, match="unshifted means"):
        pool_windows([q], pm, WindowPlan(S, [2], [1], [1], shift=True, mean=False,
                                         pooling_factor=4, num_levels=3), coarsest=means[:1])


def test_position_map_inverts_selection():
    q, k, _ = qkv(B=2, H=3, N=1024, seed=31)
    c = cfg("triton", num_levels=3)
    sq, sk = row_norms(q), row_norms(k)
    sel, pm_kernel = select_with_map(sq, sk, c)
    pm = position_map(sel, 1024, 2, 3)
    assert torch.equal(pm, pm_kernel)  # the cascade's own map and the standalone map kernel
    offsets = torch.tensor([0, 1024, 1536], device=DEV)
    flat = offsets[sel.level] + sel.index
    S = sel.level.shape[-1]
    assert torch.equal(pm.gather(2, flat).long(), torch.arange(S, device=DEV).expand_as(flat))
    assert int((pm >= 0).sum()) == 2 * 3 * S  # nothing else is mapped


def test_cascade_map_alone_fills_every_entry(monkeypatch):
    """The map-only cascade (no level/index written) starts from garbage memory and still
    gives the same map: every program sets its windows to -1 before writing positions."""
    import lighthouse_attn.ops.triton.select as tsel

    q, k, _ = qkv(B=2, H=3, N=1024, seed=32)
    c = cfg("triton", num_levels=3)
    sq, sk = row_norms(q), row_norms(k)
    sel, pm = select_with_map(sq, sk, c)

    class GarbageTorch:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def empty(*shape, **kw):
            return torch.full(shape, 77, **kw)

    monkeypatch.setattr(tsel, "torch", GarbageTorch())
    none, pm_alone = select_with_map(sq, sk, c, with_selection=False)
    assert none is None and torch.equal(pm_alone, pm)


def test_selection_ties_identical():
    """Integer-valued scores: many exact ties, broken towards the lower index by both."""
    g = torch.Generator().manual_seed(22)
    N = 1024
    sq0 = torch.randint(0, 6, (1, 3, N), generator=g).float()
    sk0 = torch.randint(0, 6, (1, 3, N), generator=g).float()
    sq0[0, 1] = 1.0  # a head where everything ties
    sq0[0, 2, :300] = -0.0  # negative zero ties with zero
    c = cfg("triton", num_levels=3)
    ref = select_from_scores(level_scores(sq0, 3, 2), level_scores(sk0, 3, 2), c)
    got = select_with_map(sq0.to(DEV), sk0.to(DEV), c)[0]
    assert torch.equal(ref.level, got.level.cpu()) and torch.equal(ref.index, got.index.cpu())


def _close(got, ref, truth):
    """fp64/fp32: elementwise; bf16: both within 1e-2 relative norm of the fp64 truth and the
    kernel no worse than the reference (which accumulates some sums in bf16)."""
    if got.dtype == torch.bfloat16:
        rel = lambda a: ((a.double() - truth).norm() / truth.norm()).item()  # noqa: E731
        assert rel(got) < 1e-2 and rel(got) <= rel(ref) * 1.5 + 1e-3
    else:
        tol = 1e-12 if got.dtype == torch.float64 else 1e-5
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("gqa", ["expand", "shared"])
def test_gather_and_scatter_kernels_match_twins(dtype, gqa):
    c = cfg("torch", num_levels=3, gqa=gqa)
    B, H, Hkv, N, D = 1, 4, 2, 1024, 8
    q, k, _ = qkv(B=B, H=H, Hkv=Hkv, N=N, D=D, dtype=dtype, seed=23, requires_grad=True)
    sel = select(q, k, c)
    G = H // Hkv
    heads, div = (Hkv, 1) if gqa == "shared" else (H, G)
    q_sel = sel if gqa == "expand" else type(sel)(*(x.repeat_interleave(G, 1) for x in sel))
    pm = position_map(sel, N, 2, 3)

    def ref_gather(x):
        return gather(build_pyramid(x if gqa == "shared" else x.repeat_interleave(G, 1), 3, 2),
                      sel)

    S = sel.level.shape[-1]

    def kernels(x, o):
        (g,) = pool_windows_differentiable([x], pm, gather_plan(S, [heads], [div], 2, 3))
        (out,) = spread_windows_differentiable(
            [o], pm, scatter_plan(N, [H], 2, 3, sel_divs=[G if gqa == "shared" else 1]))
        return g, out

    def reference(x, o):
        return ref_gather(x), scatter(o, q_sel, N, c)

    o = torch.randn(B, H, sel.level.shape[-1], D, dtype=torch.float64).to(DEV, dtype)
    o.requires_grad_()
    k64, o64 = (x.detach().double().requires_grad_() for x in (k, o))
    results = []
    for fn, (x, oo) in ((kernels, (k, o)), (reference, (k, o)), (reference, (k64, o64))):
        g, out = fn(x, oo)
        gk = torch.randn(g.shape, generator=torch.Generator().manual_seed(1),
                         dtype=torch.float64).to(g.device, g.dtype)
        go = torch.randn(out.shape, generator=torch.Generator().manual_seed(2),
                         dtype=torch.float64).to(out.device, out.dtype)
        dx = torch.autograd.grad(g, x, gk)[0]
        do = torch.autograd.grad(out, oo, go)[0]
        results.append((g, out, dx, do))
    for got, ref, truth in zip(*results):
        _close(got, ref, truth)


@pytest.mark.parametrize("kw,gqa", [(dict(), "expand"), (dict(num_levels=3), "shared"),
                                    (dict(num_levels=3, pooling_factor=4), "expand")])
def test_full_op_fp64_matches_torch_and_oracle(kw, gqa):
    N = 2048 if kw.get("pooling_factor") == 4 else 1024
    q, k, v = qkv(B=1, H=2, Hkv=1, N=N, D=4, dtype=torch.float64, seed=24, requires_grad=True)
    outs, grads = [], []
    for backend in ("torch", "triton"):
        out = lighthouse_attention(q, k, v, cfg(backend, gqa=gqa, **kw))
        g = torch.autograd.grad(out, (q, k, v), torch.ones_like(out) + out.detach())
        outs.append(out)
        grads.append(g)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-12)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
    if not kw:
        c = cfg("torch", gqa=gqa)
        ref = spec_oracle.attention(q.detach().cpu(), k.detach().cpu(), v.detach().cpu(), c)
        torch.testing.assert_close(outs[1].cpu(), ref, rtol=1e-10, atol=1e-10)


def test_bf16_within_tolerance_of_fp32_reference():
    q, k, v = qkv(B=1, H=2, N=1024, D=24, dtype=torch.bfloat16, seed=25,
                  requires_grad=True)  # D not a power of two: masked lanes
    c = cfg("triton", num_levels=3)
    out = lighthouse_attention(q, k, v, c)
    out.float().square().sum().backward()
    ref_in = [x.detach().float().requires_grad_() for x in (q, k, v)]
    ref = lighthouse_attention(*ref_in, cfg("torch", num_levels=3),
                               selection=select(q, k, cfg("torch", num_levels=3)))
    ref.square().sum().backward()
    rel = lambda a, b: ((a.float() - b).norm() / b.norm()).item()  # noqa: E731
    assert out.dtype == torch.bfloat16 and rel(out, ref) < 1e-2
    for x, r in zip((q, k, v), ref_in):
        assert rel(x.grad, r.grad) < 2e-2


def test_gradcheck_through_kernels():
    q, k, v = qkv(B=1, H=2, Hkv=1, N=256, D=2, dtype=torch.float64, seed=26,
                       requires_grad=True)
    c = cfg("triton")
    sel = select(q, k, c)
    fn = lambda a, b, d: lighthouse_attention(a, b, d, c, selection=sel)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v), fast_mode=True)


def test_custom_ops_pass_opcheck():
    q, k, _ = qkv(B=1, H=2, N=256, D=4, seed=27, requires_grad=True)
    sel = select(q, k, cfg("torch"))
    pm = position_map(sel, 256, 2, 2)
    S = sel.level.shape[-1]
    torch.library.opcheck(pool_op, ([k, q], pm, S, [2, 2], [1, 1], [1, 1], False, True, 2, 2))
    torch.library.opcheck(pool_op, ([k], pm, S, [2], [1], [1], True, False, 2, 2))
    o = torch.randn(1, 2, S, 4, device=DEV, requires_grad=True)
    torch.library.opcheck(spread_op, ([o], pm, 256, [2], [1], [1], True, False, 2, 2))
    o2 = torch.randn(1, 2, S, 4, device=DEV, requires_grad=True)
    torch.library.opcheck(spread_op, ([o, o2], pm, 256, [2, 1], [1, 2], [1, 1], False, True,
                                      2, 2))


def test_three_tensor_launch_equals_separate_launches():
    q, k, v = qkv(B=2, H=4, Hkv=2, N=512, D=8, seed=32)
    sel = select(q, k, cfg("torch"))
    pm = position_map(sel, 512, 2, 2)
    S = sel.level.shape[-1]
    fused = pool_windows([q, k, v], pm, gather_plan(S, [4, 4, 4], [1, 2, 2], 2, 2))
    alone = [pool_windows([x], pm, gather_plan(S, [4], [d], 2, 2))[0]
             for x, d in ((q, 1), (k, 2), (v, 2))]
    for a, b in zip(fused, alone):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend,layout", [("torch", "contiguous"), ("triton", "contiguous"),
                                            ("triton", "model")])
def test_compiled_op_matches_eager_with_gradients(backend, layout):
    """torch.compile (fullgraph) gives the eager outputs and gradients on both paths (torch 2.11
    once traced the reference scatter's hand-written backward to zeros), also on inputs in the
    ``(B, N, H, D)`` memory of a model (whose layout the eager path keeps)."""
    torch._dynamo.reset()
    q, k, v = qkv(B=1, H=2, N=512, D=4, seed=28)
    if layout == "model":
        q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    w = torch.randn(1, 2, 512, 4, generator=torch.Generator().manual_seed(5)).to(DEV)
    c = cfg(backend)
    fn = torch.compile(lambda a, b, d: lighthouse_attention(a, b, d, c), fullgraph=True,
                       backend="aot_eager")
    runs = []
    for f in (lambda a, b, d: lighthouse_attention(a, b, d, c), fn):
        out = f(q, k, v)
        runs.append((out, *torch.autograd.grad((out * w).sum(), (q, k, v))))
    for eager, compiled in zip(*runs):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


def test_deterministic_runs_are_bitwise_equal():
    q, k, v = qkv(B=1, H=2, N=512, D=8, seed=29, requires_grad=True)
    c = cfg("triton", deterministic=True)
    runs = []
    for _ in range(2):
        out = lighthouse_attention(q, k, v, c)
        runs.append((out, *torch.autograd.grad(out.square().sum(), (q, k, v))))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_backend_resolution_errors(monkeypatch):
    q, k, v = qkv(N=768)
    with pytest.raises(ValueError, match="power of two.*backend='torch'"):
        lighthouse_attention(q, k, v, LighthouseConfig(num_levels=2, pooling_factor=3,
                                                       topk=128, backend="triton"))
    if DEV == "cpu":
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(ValueError, match="not CUDA tensors"):
            lighthouse_attention(q[..., :512, :], k[..., :512, :], v[..., :512, :],
                                 cfg("triton"))
        # auto stays on the reference path for CPU tensors
        out = lighthouse_attention(q[..., :512, :], k[..., :512, :], v[..., :512, :],
                                   cfg("auto"))
        assert out.shape == (1, 2, 512, 8)


@pytest.mark.parametrize("L", [4, 3])
def test_pool_and_spread_with_level_skipping_match_twins(L):
    """The pool kernel skips the levels absent from a span (most spans at L=4, p=4, where
    windows are 64 rows; few at L=3)."""
    c = cfg("torch", num_levels=L, pooling_factor=4)
    N = c.min_seq_len
    q, k, v = qkv(B=1, H=1, N=N, D=4, dtype=torch.float64, seed=33)
    sel = select(q, k, c)
    S = sel.level.shape[-1]
    pm = position_map(sel, N, 4, L)
    got = pool_windows([q, k], pm, gather_plan(S, [1, 1], [1, 1], 4, L))
    for x, g in zip((q, k), got):
        torch.testing.assert_close(g, gather(build_pyramid(x, L, 4), sel), rtol=0, atol=1e-12)
    o = torch.randn(1, 1, S, 4, dtype=torch.float64, device=DEV)
    scatter_1 = scatter_plan(N, [1], 4, L)
    (shifted,) = pool_windows([v], pm, scatter_1.adjoint([o]))
    (out,) = spread_windows([o], pm, scatter_1)
    torch.testing.assert_close(out, scatter(o, sel, N, c), rtol=0, atol=1e-12)
    # the scatter's pool is its adjoint: <spread(o), v> == <o, pool(v)>
    torch.testing.assert_close((out * v).sum(), (o * shifted).sum(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("D", [8, 160])
def test_spread_spans_shorter_than_the_coarsest_window(D):
    """The spread's spans (16 rows, 8 above D=128) need not hold whole windows: with L=4, p=4
    (windows of 64) and L=3 at D=160 (spans of 8, windows of 16) a span shares one entry of
    each longer window. Scatter and gather adjoint against the reference, shifted and not."""
    import lighthouse_attn.ops.triton.gather_scatter as gs

    L = 4 if D <= 128 else 3
    c = cfg("torch", num_levels=L, pooling_factor=4)
    N = c.min_seq_len
    assert (gs.SPREAD_ROWS if D <= 128 else gs.SPREAD_ROWS // 2) < c.coarsest_window
    q, k, _ = qkv(B=1, H=1, N=N, D=D, dtype=torch.float64, seed=34)
    sel = select(q, k, c)
    S = sel.level.shape[-1]
    pm = position_map(sel, N, 4, L)
    o = torch.randn(1, 1, S, D, dtype=torch.float64, device=DEV)
    (out,) = spread_windows([o], pm, scatter_plan(N, [1], 4, L))
    torch.testing.assert_close(out, scatter(o, sel, N, c), rtol=0, atol=1e-12)
    # the gather's adjoint: <spread(g), x> == <g, gather(x)>
    g = torch.randn_like(o)
    (back,) = spread_windows([g], pm, gather_plan(S, [1], [1], 4, L).adjoint([q]))
    ref = gather(build_pyramid(q, L, 4), sel)
    torch.testing.assert_close((back * q).sum(), (g * ref).sum(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("L,p,dtype,B,H", [(3, 2, torch.float64, 2, 2),
                                            (4, 4, torch.float64, 1, 1),  # level skipping
                                            (3, 4, torch.bfloat16, 2, 1)])
def test_scatter_tail_kernels_match_twin(L, p, dtype, B, H):
    """The scatter's spread writes the rows past the end into a tail (in its fp32/fp64
    buffer) as ``scatter_with_tail`` makes them, and the scatter's pool reads a tail back as
    that function's adjoint (context parallelism's spill and its gradient)."""
    from lighthouse_attn.ops.reference.scatter import scatter_with_tail

    c = cfg("torch", num_levels=L, pooling_factor=p)
    N, D = c.min_seq_len, 8
    q, k, _ = qkv(B=B, H=H, N=N, D=D, dtype=dtype, seed=41)
    sel = select(q, k, c)
    pm = position_map(sel, N, p, L)
    S, R = sel.level.shape[-1], c.coarsest_window - 1
    o = torch.randn(B, H, S, D, dtype=torch.float64, device=DEV).to(dtype).requires_grad_()
    ref_out, ref_tail = scatter_with_tail(o, sel, N, c)
    plan = scatter_plan(N, [H], p, L)
    acc = torch.promote_types(dtype, torch.float32)
    tail = torch.full((B, H, R, D), float("nan"), dtype=acc, device=DEV)
    (out,) = spread_windows([o.detach()], pm, plan, tail=tail)
    tol = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(out, ref_out, **tol)
    torch.testing.assert_close(tail, ref_tail, rtol=1e-6 if acc != torch.float64 else 0,
                               atol=1e-12)
    assert tail.abs().sum() > 0  # the last windows do reach past the end
    dout = torch.randn(ref_out.shape, dtype=torch.float64, device=DEV).to(dtype)
    dtail = torch.randn(ref_tail.shape, dtype=torch.float64, device=DEV).to(acc)
    want = torch.autograd.grad((ref_out, ref_tail), o, (dout, dtail))[0]
    (got,) = pool_windows([dout], pm, plan.adjoint([o]), tail=dtail)
    torch.testing.assert_close(got, want, **tol)
    with pytest.raises(ValueError, match="a tail is"):
        spread_windows([o.detach()], pm, plan, tail=torch.zeros(B, H, R + 1, D, dtype=acc))


def test_shared_gqa_gives_the_inner_kernel_kv_heads():
    q, k, v = qkv(B=1, H=4, Hkv=2, N=512, D=8, seed=34)
    c = cfg("triton", gqa="shared")
    seen = []

    def attn_fn(qq, kk, vv, scale):
        seen.append((tuple(qq.shape), tuple(kk.shape), tuple(vv.shape)))
        return torch.nn.functional.scaled_dot_product_attention(
            qq, kk.repeat_interleave(2, 1), vv.repeat_interleave(2, 1), is_causal=True,
            scale=scale)

    out = lighthouse_attention(q, k, v, c, attn_fn=attn_fn)
    S = c.gathered_length(512)
    assert seen == [((1, 4, S, 8), (1, 2, S, 8), (1, 2, S, 8))]
    torch.testing.assert_close(out, lighthouse_attention(q, k, v, cfg("torch", gqa="shared")),
                               rtol=1e-5, atol=1e-6)


def _math_attention_with_lse(q, k, v, scale):
    """Causal attention and its natural-log logsumexp, in torch (a stand-in for cuDNN)."""
    from lighthouse_attn.ops.inner import sdpa_causal

    k2 = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
    s = scale * q @ k2.transpose(-1, -2)
    S = q.shape[2]
    s = s.masked_fill(torch.ones(S, S, dtype=torch.bool, device=q.device).triu(1), -torch.inf)
    return sdpa_causal(q, k, v, scale), torch.logsumexp(s, -1)


@pytest.mark.parametrize("gqa,Hkv,deterministic,p", [
    ("expand", 1, False, 2), ("shared", 2, False, 2), ("expand", 1, True, 2),
    ("expand", 1, False, 4),  # coarsest windows of 16: q and k pooled by the norm kernel
])
def test_one_node_layer_matches_reference(monkeypatch, gqa, Hkv, deterministic, p):
    """The eager one-node layer (pool, attention, spread and their backward in one autograd
    node) against the torch backend. cuDNN's ops are stood in by math attention; the
    deterministic variant runs the real Triton attention backward (fp32 here)."""
    from lighthouse_attn.ops.inner import sdpa_causal
    from lighthouse_attn.ops.triton import attention as fast

    def fwd(q, k, v, scale):
        if deterministic:
            out, lse = _math_attention_with_lse(q, k, v, scale)
            return out, (lse,), ()
        return sdpa_causal(q, k, v, scale), (q, k, v), ()

    def bwd(dout, q, k, v, out, saved, sizes, scale):
        xs = [x.detach().requires_grad_() for x in saved]
        with torch.enable_grad():
            return torch.autograd.grad(sdpa_causal(*xs, scale), xs, dout)

    calls, means = [], []
    inner = (fwd, fast._deterministic_backward if deterministic else bwd)
    monkeypatch.setattr(fast, "_one_node_inner", lambda *a: calls.append(1) or inner)
    norms_and_means = fast.row_norms_and_means
    monkeypatch.setattr(fast, "row_norms_and_means",
                        lambda *a: means.append(1) or norms_and_means(*a))
    dtype = torch.float32 if deterministic else torch.float64
    N = 1024 if p == 2 else 2048
    q, k, v = qkv(B=2 if gqa == "shared" else 1, H=2, Hkv=Hkv, N=N, D=16, dtype=dtype, seed=33,
                  requires_grad=True)
    res = []
    for backend in ("triton", "torch"):
        c = cfg(backend, num_levels=3, pooling_factor=p, gqa=gqa)
        out = lighthouse_attention(q, k, v, c, scale=0.3)
        res.append((out, *torch.autograd.grad(out, (q, k, v), out.detach() + 1)))
    assert calls, "the one-node layer did not run"
    assert bool(means) == (p == 4), "the norm kernel pools the coarsest level iff p^(L-1) = 16"
    tol = 2e-4 if deterministic else 1e-11
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("one_node", [False, True])
def test_output_and_gradients_keep_the_inputs_memory_layout(monkeypatch, one_node):
    """Inputs laid out as models make them, ``(B, N, H, D)`` memory seen as ``(B, H, N, D)``:
    the output comes back in ``q``'s layout and each gradient in its input's (the model's
    transpose back is then a view, not a copy), with the values of contiguous inputs."""
    from lighthouse_attn.ops.inner import sdpa_causal
    from lighthouse_attn.ops.triton import attention as fast

    def bwd(dout, q, k, v, out, saved, sizes, scale):
        xs = [x.detach().requires_grad_() for x in saved]
        with torch.enable_grad():
            return torch.autograd.grad(sdpa_causal(*xs, scale), xs, dout)

    inner = ((lambda q, k, v, scale: (sdpa_causal(q, k, v, scale), (q, k, v), ())), bwd)
    monkeypatch.setattr(fast, "_one_node_inner", lambda *a: inner if one_node else None)
    c = cfg("triton")
    flat = qkv(B=1, H=2, Hkv=1, N=512, D=8, dtype=torch.float64, seed=34)
    results = []
    for layout in ("contiguous", "model"):
        xs = [(x.transpose(1, 2).contiguous().transpose(1, 2) if layout == "model" else
               x.clone()).requires_grad_() for x in flat]
        out = lighthouse_attention(*xs, c)
        grads = torch.autograd.grad(out, xs, torch.randn(
            out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(5)).to(DEV))
        for t, x in zip((out, *grads), (xs[0], *xs)):
            assert t.stride() == x.stride(), (layout, t.stride(), x.stride())
        results.append((out, *grads))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
