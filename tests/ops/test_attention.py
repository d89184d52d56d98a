"""The composed op of the reference path against SPEC (sections 1, 5-8)."""

import warnings

import pytest
import spec_oracle
import torch
import torch.nn.functional as F
from conftest import rand_qkv

from lighthouse_attn import LighthouseConfig, Selection, lighthouse_attention, select
from lighthouse_attn.ops import api as attention_module
from lighthouse_attn.ops.reference.scatter import scatter

SMALL = dict(num_levels=2, pooling_factor=2, topk=128)


@pytest.mark.parametrize("kw,N", [
    (SMALL, 512),
    (dict(num_levels=3, pooling_factor=2, topk=128), 1024),
    (dict(num_levels=3, pooling_factor=3, topk=128), 1152),
    (dict(num_levels=2, pooling_factor=4, topk=256), 2048),
])
def test_output_matches_oracle(kw, N):
    cfg = LighthouseConfig(**kw)
    q, k, v = rand_qkv(B=1, H=2 if N < 2048 else 1, N=N, D=4, dtype=torch.float64, seed=5)
    out = lighthouse_attention(q, k, v, cfg)
    torch.testing.assert_close(out, spec_oracle.attention(q, k, v, cfg), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gqa", ["expand", "shared"])
def test_gqa_dilated_output_matches_oracle(gqa):
    cfg = LighthouseConfig(**SMALL, gqa=gqa, scorer="dilated", dilation=2)
    q, k, v = rand_qkv(B=1, H=4, Hkv=2, N=512, D=4, dtype=torch.float64, seed=6)
    out = lighthouse_attention(q, k, v, cfg, scale=0.3)
    ref = spec_oracle.attention(q, k, v, cfg, scale=0.3)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_one_level_is_dense_sdpa_exactly():
    q, k, v = rand_qkv(B=2, H=3, N=96, D=8, dtype=torch.float64)
    out = lighthouse_attention(q, k, v, LighthouseConfig(num_levels=1))
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def _perturb_after(x, t, seed):
    y = x.clone()
    y[:, :, t + 1:] = torch.randn(y[:, :, t + 1:].shape, generator=torch.Generator()
                                  .manual_seed(seed), dtype=x.dtype)
    return y


@pytest.mark.parametrize("kw,N", [(SMALL, 512), (dict(num_levels=3, pooling_factor=2,
                                                       topk=128), 1024)])
def test_causal_with_fixed_selection(kw, N):
    cfg = LighthouseConfig(**kw)
    q, k, v = rand_qkv(B=1, H=2, N=N, D=4, dtype=torch.float64, seed=7)
    sel = select(q, k, cfg)
    out = lighthouse_attention(q, k, v, cfg, selection=sel)
    # every level mix: positions inside refined and coarse regions and at window edges
    w = cfg.coarsest_window
    ts = sorted({0, 1, w - 2, w - 1, w, N // 3, N // 2 + 1, N - w - 1, N - 2}
                | set(range(5, N - 1, N // 13)))
    for i, t in enumerate(ts):
        for which in range(3):
            args = [q, k, v]
            args[which] = _perturb_after(args[which], t, seed=100 + i)
            got = lighthouse_attention(*args, cfg, selection=sel)
            torch.testing.assert_close(got[:, :, :t + 1], out[:, :, :t + 1], rtol=0, atol=1e-12)
            assert not torch.allclose(got[:, :, t + 1:], out[:, :, t + 1:])  # it did change


def test_causal_in_v_with_selection_recomputed():
    cfg = LighthouseConfig(num_levels=3, pooling_factor=2, topk=128)
    q, k, v = rand_qkv(N=1024, D=4, dtype=torch.float64, seed=8)
    out = lighthouse_attention(q, k, v, cfg)
    for t in (0, 100, 511, 777, 1022):
        got = lighthouse_attention(q, k, _perturb_after(v, t, seed=t), cfg)
        torch.testing.assert_close(got[:, :, :t + 1], out[:, :, :t + 1], rtol=0, atol=1e-12)


def test_gradcheck_fp64():
    cfg = LighthouseConfig(**SMALL)
    q, k, v = rand_qkv(B=1, H=2, Hkv=1, N=256, D=3, dtype=torch.float64, seed=9,
                       requires_grad=True)
    sel = select(q, k, cfg)
    fn = lambda a, b, c: lighthouse_attention(a, b, c, cfg, selection=sel)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v), fast_mode=True)
    shared = LighthouseConfig(**SMALL, gqa="shared")
    sel = select(q, k, shared)
    fn = lambda a, b, c: lighthouse_attention(a, b, c, shared, selection=sel)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v), fast_mode=True)


def test_scatter_gradcheck_and_shift():
    cfg = LighthouseConfig(num_levels=3, pooling_factor=2, topk=128)
    q, k, _ = rand_qkv(N=1024, H=1, seed=10)
    sel = select(q, k, cfg)
    S = sel.level.shape[-1]
    o = torch.randn(1, 1, S, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: scatter(x, sel, 1024, cfg), (o,))
    # each entry lands exactly on [m p^l + p^l - 1, m p^l + 2 p^l - 1)
    ones = torch.zeros(1, 1, S, 1, dtype=torch.float64)
    s = 5
    ones[0, 0, s] = 1
    hit = scatter(ones, sel, 1024, cfg)[0, 0, :, 0].nonzero().flatten().tolist()
    lvl, m = int(sel.level[0, 0, s]), int(sel.index[0, 0, s])
    w = 2**lvl
    assert hit == list(range(m * w + w - 1, min(m * w + 2 * w - 1, 1024)))


def test_gqa_expand_equals_repeated_kv():
    cfg = LighthouseConfig(**SMALL)
    q, k, v = rand_qkv(B=2, H=4, Hkv=2, N=512, seed=11)
    a = lighthouse_attention(q, k, v, cfg)
    b = lighthouse_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), cfg)
    assert torch.equal(a, b)


def test_gqa_shared_passes_kv_heads_to_inner_kernel():
    cfg = LighthouseConfig(**SMALL, gqa="shared")
    q, k, v = rand_qkv(B=1, H=4, Hkv=2, N=512, seed=12)
    seen = []

    def attn_fn(qq, kk, vv, scale):
        seen.append((qq.shape, kk.shape, scale))
        return F.scaled_dot_product_attention(qq, kk.repeat_interleave(2, 1),
                                              vv.repeat_interleave(2, 1), is_causal=True,
                                              scale=scale)

    out = lighthouse_attention(q, k, v, cfg, attn_fn=attn_fn)
    S = cfg.gathered_length(512)
    assert seen == [((1, 4, S, 8), (1, 2, S, 8), 8**-0.5)]
    torch.testing.assert_close(out, lighthouse_attention(q, k, v, cfg), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 5e-3),
                                       (torch.bfloat16, 3e-2)])
def test_dtypes_close_to_fp64_reference(dtype, tol):
    cfg = LighthouseConfig(num_levels=3, pooling_factor=2, topk=128)
    q, k, v = rand_qkv(B=2, H=2, N=1024, D=16, dtype=dtype, seed=13, requires_grad=True)
    sel = select(q, k, cfg)
    out = lighthouse_attention(q, k, v, cfg, selection=sel)
    assert out.dtype == dtype
    out.float().square().sum().backward()
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = lighthouse_attention(q64, k64, v64, cfg, selection=sel)
    ref.square().sum().backward()
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(out, ref) < tol
    for x, x64 in ((q, q64), (k, k64), (v, v64)):
        assert x.grad.dtype == dtype and rel(x.grad, x64.grad) < 4 * tol


def test_selection_reuse_and_validation():
    cfg = LighthouseConfig(**SMALL)
    q, k, v = rand_qkv(N=512)
    sel = select(q, k, cfg)
    assert torch.equal(lighthouse_attention(q, k, v, cfg, selection=sel),
                       lighthouse_attention(q, k, v, cfg))
    with pytest.raises(ValueError, match="shape"):
        lighthouse_attention(q, k, v, cfg, selection=Selection(sel.level[:, :1], sel.index))
    bad = Selection(sel.level.clone(), sel.index.clone())
    bad.level[0, 0, 0] = 0 if int(bad.level[0, 0, 0]) else 1
    with pytest.raises(ValueError, match="level-"):
        lighthouse_attention(q, k, v, cfg, selection=bad)
    bad = Selection(sel.level, sel.index.clone())
    bad.index[0, 0, 0] = 10_000
    with pytest.raises(ValueError, match="outside their level"):
        lighthouse_attention(q, k, v, cfg, selection=bad)


def test_short_sequence_dense_fallback_warns_once(monkeypatch):
    monkeypatch.setattr(attention_module, "_warned_short", set())
    cfg = LighthouseConfig(short_seq="dense")
    q, k, v = rand_qkv(N=64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = lighthouse_attention(q, k, v, cfg)
        lighthouse_attention(q, k, v, cfg)
    assert len(caught) == 1 and "dense" in str(caught[0].message)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    with pytest.raises(ValueError, match="too short"):
        lighthouse_attention(q, k, v, LighthouseConfig())


def test_positions_reached_by_nothing_are_zero():
    # position 0 is reached only by the base token 0 or a level-0 entry; with a coarse first
    # entry of width w, positions 0 .. w-2 receive nothing
    cfg = LighthouseConfig(num_levels=2, pooling_factor=4, topk=128)
    q, k, v = rand_qkv(N=2048, H=1, seed=14)
    sel = select(q, k, cfg)
    out = lighthouse_attention(q, k, v, cfg, selection=sel)
    first_level = int(sel.level[0, 0, 0])
    if first_level == 1:
        assert torch.equal(out[0, 0, :3], torch.zeros_like(out[0, 0, :3]))
        assert out[0, 0, 3].abs().sum() > 0
