"""``lighthouse_attention(..., rope=)`` on the Triton path: one launch scores the rotated rows
(norms, and on the one-node layer the coarsest means), and the op makes no pass of its own
over them. On the one-node layer the pool rotates the rows it gathers and the spread rotates
the gradients back (the rotated q and k are never written); on the composed path that launch
also writes them. Either way the result equals the op on q and k rotated first."""

import pytest
import torch
from conftest import rand_qkv

pytest.importorskip("triton")

from lighthouse_attn import LighthouseConfig, lighthouse_attention, select  # noqa: E402
from lighthouse_attn.ops import rope_tables  # noqa: E402
from lighthouse_attn.ops.inner import sdpa_causal  # noqa: E402
from lighthouse_attn.ops.triton import attention as fast  # noqa: E402
from lighthouse_attn.ops.triton import rope as rope_kernel  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _math_inner():
    """cuDNN's ops stood in by math attention (the one-node layer on any device)."""
    def bwd(dout, q, k, v, out, saved, sizes, scale):
        xs = [x.detach().requires_grad_() for x in saved]
        with torch.enable_grad():
            return torch.autograd.grad(sdpa_causal(*xs, scale), xs, dout)

    return (lambda q, k, v, scale: (sdpa_causal(q, k, v, scale), (q, k, v), ())), bwd


def _count(monkeypatch, module, name, calls):
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **kw: calls.append(name) or real(*a, **kw))


def _inside_and_first(q, k, v, cfg, tables, calls=None, **kw):
    """The op with ``rope=`` and on q, k rotated first by the same kernel, with gradients to
    the unrotated inputs; ``calls`` keeps only what the first (``rope=``) made."""
    res = []
    if calls is not None:
        calls.clear()
    for inside in (True, False):
        xs = [x.detach().clone().requires_grad_() for x in (q, k, v)]
        if inside:
            out = lighthouse_attention(*xs, cfg, rope=tables, **kw)
        else:
            out = lighthouse_attention(*rope_kernel.rope_pair(*xs[:2], *tables), xs[2], cfg, **kw)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(out)
        res.append((out, *torch.autograd.grad((out * w).sum(), xs)))
        if calls is not None and inside:
            inside_calls = list(calls)
    if calls is not None:
        calls[:] = inside_calls
    return res


@pytest.mark.parametrize("one_node,kw", [
    (False, dict(num_levels=2, pooling_factor=2, topk=128)),
    (False, dict(num_levels=3, pooling_factor=2, topk=128, gqa="shared",
                 selection="causal")),
    (True, dict(num_levels=3, pooling_factor=4, topk=128)),  # windows of 16: means too
    (True, dict(num_levels=2, pooling_factor=2, topk=128, gqa="shared")),  # norms only
])
def test_rope_inside_scores_while_rotating(monkeypatch, one_node, kw):
    if one_node:
        monkeypatch.setattr(fast, "_one_node_inner", lambda *a: _math_inner())
    else:
        monkeypatch.setattr(fast, "_one_node_inner", lambda *a: None)
    cfg = LighthouseConfig(backend="triton", **kw)
    N = cfg.min_seq_len
    H = 1 if N > 1024 else 2  # the interpreter's time grows with N H
    q, k, v = rand_qkv(H=H, Hkv=1, N=N, D=16, dtype=torch.float32, seed=6, device=DEV)
    tables = rope_tables(N, 16, 10000.0, torch.device(DEV))
    calls = []
    for module, name in ((fast, "row_norms_and_means"), (fast, "scores_qk"),
                         (fast, "rope_pair_scored"), (fast, "rope_scores"),
                         (fast, "rope_pair")):
        _count(monkeypatch, module, name, calls)
    got, want = _inside_and_first(q, k, v, cfg, tables, calls)
    # one launch scores; on the one-node layer the rotated q and k are never written (the
    # pool rotates what it gathers, the spread rotates the gradients back)
    assert calls == ["rope_scores" if one_node else "rope_pair_scored"], calls
    means = fast.means_apply(cfg.coarsest_window, 16) and one_node
    tol = 1e-6 if means else 0  # means summed in another order; norms are equal bitwise
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pool_and_spread_rotate_as_the_rope_kernel(dtype):
    """``pool_windows(rope=)`` gathers q and k rotated row by row, as pooling the RoPE
    kernel's outputs does, and ``spread_windows(rope=)`` is its adjoint: the spread gradients
    rotated back, as the RoPE kernel's backward makes them. v is not rotated. Bit for bit."""
    from lighthouse_attn.ops.triton.gather_scatter import (
        pool_windows,
        position_map,
        spread_windows,
    )

    cfg = LighthouseConfig(backend="triton", num_levels=3, pooling_factor=2, topk=128)
    N, D = cfg.min_seq_len, 16
    q, k, v = rand_qkv(H=2, Hkv=1, N=N, D=D, dtype=dtype, seed=10, device=DEV)
    tables = rope_tables(N, D, 10000.0, torch.device(DEV))
    qr, kr = rope_kernel.rope_pair(q, k, *tables)
    pos_map = position_map(select(qr, kr, cfg), N, 2, 3)
    gather = fast.window_plans(qr, kr, cfg)[0]
    want = pool_windows([qr, kr, v], pos_map, gather)
    got = pool_windows([q, k, v], pos_map, gather, rope=tables)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    adjoint = gather.adjoint([q, k, v])
    gen = torch.Generator().manual_seed(11)
    grads = [torch.randn(x.shape, generator=gen).to(DEV, dtype) for x in want]
    spread = spread_windows(grads, pos_map, adjoint)
    xs = [x.clone().requires_grad_() for x in (q, k)]
    back = torch.autograd.grad(rope_kernel.rope_pair(*xs, *tables), xs, spread[:2])
    for a, b in zip(spread_windows(grads, pos_map, adjoint, rope=tables), (*back, spread[2])):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="gather"):
        pool_windows([q], pos_map, gather._replace(heads=[2]), rope=tables)
    with pytest.raises(ValueError, match=r"fp32 tables of shape \(N, D/2\)"):
        pool_windows([q, k, v], pos_map, gather, rope=(tables[0][:8], tables[1]))


def test_rope_inside_means_reach_the_pool(monkeypatch):
    """On the one-node layer the coarsest means made while rotating are the ones pooled:
    moved, they move the output (a test that the plumbing is live)."""
    monkeypatch.setattr(fast, "_one_node_inner", lambda *a: _math_inner())
    cfg = LighthouseConfig(backend="triton", num_levels=3, pooling_factor=4, topk=128)
    N = cfg.min_seq_len
    q, k, v = rand_qkv(H=1, N=N, D=16, dtype=torch.float32, seed=7, device=DEV)
    tables = rope_tables(N, 16, 10000.0, torch.device(DEV))
    base = lighthouse_attention(q, k, v, cfg, rope=tables)
    real = fast.rope_scores

    def shifted(*a):
        out = real(*a)
        assert len(out) == 4, "no means were asked for"
        return (*out[:2], out[2] + 1, out[3])

    monkeypatch.setattr(fast, "rope_scores", shifted)
    assert not torch.allclose(lighthouse_attention(q, k, v, cfg, rope=tables), base)


def test_rope_inside_with_a_selection_or_another_scorer_rotates_only(monkeypatch):
    monkeypatch.setattr(fast, "_one_node_inner", lambda *a: None)
    q, k, v = rand_qkv(H=1, N=256, D=8, dtype=torch.float32, seed=8, device=DEV)
    tables = rope_tables(256, 8, 10000.0, torch.device(DEV))
    calls = []
    _count(monkeypatch, fast, "rope_pair", calls)
    _count(monkeypatch, fast, "rope_pair_scored", calls)
    cfg = LighthouseConfig(backend="triton", num_levels=2, pooling_factor=2, topk=128)
    sel = select(*rope_kernel.rope_pair(q, k, *tables), cfg)
    got, want = _inside_and_first(q, k, v, cfg, tables, calls, selection=sel)
    assert calls == ["rope_pair"]
    dil = LighthouseConfig(backend="triton", num_levels=2, pooling_factor=2, topk=128,
                           scorer="dilated")
    got2, want2 = _inside_and_first(q, k, v, dil, tables, calls)
    assert calls == ["rope_pair"]
    for a, b in zip(got + got2, want + want2):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kw", [dict(num_levels=3, pooling_factor=4, topk=1024),
                                dict(num_levels=3, pooling_factor=4, topk=1024,
                                     selection="causal")])
def test_rope_inside_on_the_gpu_one_node_layer(kw):
    """The eager one-node layer on cuDNN in bf16, as a model calls it (projection layout):
    the same selection (norms bitwise), outputs and gradients within bf16 rounding."""
    cfg = LighthouseConfig(**kw)
    B, N, H, D = 1, 16384, 4, 128
    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(B, N, H * D, generator=g).to("cuda", torch.bfloat16)
               .view(B, N, H, D).transpose(1, 2) for _ in range(3))
    tables = rope_tables(N, D, 10000.0, torch.device("cuda"))
    got, want = _inside_and_first(q, k, v, cfg, tables)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)
    assert got[0].stride() == q.stride()  # the model's transpose back is a view
