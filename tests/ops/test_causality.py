"""Causality of the op (SPEC section 11): change q, k, v at positions >= c and compare the
outputs, and the gradients of a loss on them, at positions < c.

The paper's selection leaks (a test documents it); the causal selection must give bitwise
identical outputs and gradients before c, on the torch and the Triton backend, for every c."""

import pytest
import spec_oracle
import torch
from conftest import rand_qkv

from lighthouse_attn import LighthouseConfig, lighthouse_attention, select
from lighthouse_attn.ops.reference.select import look_back, pick_causal

DEV = "cuda" if torch.cuda.is_available() else "cpu"
try:
    import triton  # noqa: F401

    BACKENDS = ["torch", "triton"]
except ImportError:
    BACKENDS = ["torch"]

# (config, N, cuts): cuts include window (16, 64), segment, tile and sequence-end boundaries
CASES = [
    (dict(num_levels=3, pooling_factor=4, topk=128), 2048, (1, 15, 16, 17, 100, 1024, 2047)),
    (dict(num_levels=3, pooling_factor=2, topk=384), 3072, (4, 255, 1023, 1024, 1025, 2500)),
    (dict(num_levels=2, pooling_factor=2, topk=256), 1024, (2, 511, 512, 513, 900)),
]


def perturbed_after(xs, c, seed=9):
    """Copies of ``xs`` with every position >= c redrawn (larger, so selections move)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for x in xs:
        y = x.detach().clone()
        y[:, :, c:] = 3 * torch.randn(y[:, :, c:].shape, generator=g, dtype=torch.float64
                                      ).to(y.dtype)
        out.append(y)
    return out


def outputs_and_grads(qkv, cfg, c):
    """Output, and gradients of a random-weighted sum of the outputs before ``c``."""
    args = [x.detach().clone().to(DEV).requires_grad_() for x in qkv]
    out = lighthouse_attention(*args, cfg)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64).to(out)
    (out[:, :, :c] * w[:, :, :c]).sum().backward()
    return out.detach().cpu(), [a.grad.cpu() for a in args]


def changed_before(cfg, qkv, c):
    """Whether redrawing positions >= c changes outputs or gradients before c."""
    o1, g1 = outputs_and_grads(qkv, cfg, c)
    o2, g2 = outputs_and_grads(perturbed_after(qkv, c), cfg, c)
    same = torch.equal(o1[:, :, :c], o2[:, :, :c]) and all(
        torch.equal(a[:, :, :c], b[:, :, :c]) for a, b in zip(g1, g2))
    # nothing before c can depend on the inputs after it, so their gradients are zero
    assert all(torch.count_nonzero(g[:, :, c:]) == 0 for g in g1 + g2)
    return not same


@pytest.mark.parametrize("kw,N,cuts", CASES)
def test_causal_selection_outputs_before_c_are_bitwise_unchanged(kw, N, cuts):
    cfg = LighthouseConfig(selection="causal", backend="torch", **kw)
    qkv = rand_qkv(B=1, H=2, N=N, D=8, dtype=torch.float64, seed=5)
    for c in cuts:
        assert not changed_before(cfg, qkv, c), f"c={c}"


@pytest.mark.skipif("triton" not in BACKENDS, reason="needs triton")
@pytest.mark.parametrize("kw,N,cuts", [(CASES[2][0], CASES[2][1], (2, 512, 513)),
                                       (CASES[0][0], CASES[0][1], (16, 1024))])
def test_causal_selection_bitwise_causal_on_triton(kw, N, cuts):
    """The kernels (slow under the CPU interpreter: one head, fewer cuts)."""
    cfg = LighthouseConfig(selection="causal", backend="triton", **kw)
    qkv = rand_qkv(B=1, H=1, N=N, D=8, dtype=torch.float64, seed=5)
    for c in cuts:
        assert not changed_before(cfg, qkv, c), f"c={c}"


@pytest.mark.parametrize("gqa,scorer", [("expand", "dilated"), ("shared", "norm"),
                                        ("shared", "affinity"), ("expand", "affinity")])
def test_causal_selection_gqa_and_other_scorers(gqa, scorer):
    cfg = LighthouseConfig(selection="causal", backend="torch", gqa=gqa, scorer=scorer,
                           dilation=2, num_levels=3, pooling_factor=2, topk=256)
    qkv = rand_qkv(B=1, H=4, Hkv=2, N=1024, D=8, dtype=torch.float64, seed=6)
    for c in (3, 300, 512, 777):
        assert not changed_before(cfg, qkv, c), f"c={c}"


@pytest.mark.parametrize("kw,N,cuts", CASES[:1])
def test_paper_selection_leaks_the_future(kw, N, cuts):
    """The paper's mode is not causal: outputs before c move with text after c."""
    cfg = LighthouseConfig(selection="paper", backend="torch", **kw)
    qkv = rand_qkv(B=1, H=2, N=N, D=8, dtype=torch.float64, seed=5)
    leaks = [c for c in cuts if changed_before(cfg, qkv, c)]
    assert len(leaks) >= len(cuts) - 1, leaks  # c = 1 cannot leak: position 0 sees itself


def test_paper_leak_reaches_positions_just_before_a_changed_key():
    """Scaling one key moves earlier outputs under the paper's selection only."""
    q, k, v = rand_qkv(B=1, H=1, N=2048, D=8, dtype=torch.float64, seed=8)
    for selection, leaks in (("paper", True), ("causal", False)):
        cfg = LighthouseConfig(selection=selection, backend="torch", num_levels=3,
                               pooling_factor=4, topk=128)
        base = lighthouse_attention(q, k, v, cfg)
        moved = 0
        for c in (301, 777, 1290, 1800):
            k2 = k.clone()
            k2[:, :, c] *= 20
            moved += int((lighthouse_attention(q, k2, v, cfg)[:, :, :c] != base[:, :, :c]
                          ).any())
        assert (moved > 0) == leaks, selection


@pytest.mark.parametrize("kw,N", [(c[0], c[1]) for c in CASES] +
                         [(dict(num_levels=4, pooling_factor=2, topk=128), 1024)])
def test_causal_selection_matches_oracle_walk(kw, N):
    """The closed form (cumulative sums) equals the sequential walk written in the oracle."""
    cfg = LighthouseConfig(selection="causal", backend="torch", **kw)
    q, k, v = rand_qkv(B=1, H=2, N=N, D=8, seed=3)
    sel = select(q, k, cfg)
    ref = spec_oracle.select(q, k, v, cfg)
    for h in range(2):
        assert list(zip(sel.level[0, h].tolist(), sel.index[0, h].tolist())) == ref[0][h]
    assert sel.level.shape[-1] == cfg.gathered_length(N)


@pytest.mark.skipif("triton" not in BACKENDS, reason="needs triton")
@pytest.mark.parametrize("kw,N", [(c[0], c[1]) for c in CASES] + [
    (dict(num_levels=4, pooling_factor=2, topk=128), 1024),
    (dict(num_levels=2, pooling_factor=4, topk=128), 4096),  # C = 1024, look-back 16
    (dict(num_levels=2, pooling_factor=2, topk=128), 768),   # C = 384: not a power of two
])
def test_causal_selection_identical_on_triton(kw, N):
    q, k, _ = (x.to(DEV) for x in rand_qkv(B=2, H=2, N=N, D=8, seed=4))
    a = select(q, k, LighthouseConfig(selection="causal", backend="torch", **kw))
    b = select(q, k, LighthouseConfig(selection="causal", backend="triton", **kw))
    assert torch.equal(a.level.cpu(), b.level.cpu()) and torch.equal(a.index.cpu(),
                                                                      b.index.cpu())


@pytest.mark.skipif("triton" not in BACKENDS, reason="needs triton")
def test_causal_selection_ties_identical_on_triton():
    """Equal scores everywhere (strict comparisons: no candidate wants) fill every segment
    from its end, on both backends."""
    q = torch.ones(1, 1, 1024, 8, dtype=torch.float64)
    kw = dict(selection="causal", num_levels=2, pooling_factor=2, topk=128)
    a = select(q, q, LighthouseConfig(backend="torch", **kw))
    b = select(q.to(DEV), q.to(DEV), LighthouseConfig(backend="triton", **kw))
    assert torch.equal(a.index, b.index.cpu())
    refined = a.refined(2)[0, 0]
    chosen = a.index[0, 0][refined]
    # C = 512: 16 segments of 32, each refining its last 8 except the first candidate,
    # which always wants (nothing before it to beat)
    expected = sorted({0} | {s * 32 + j for s in range(16) for j in range(24, 32)} -
                      {24})
    assert chosen.tolist() == expected


def test_pick_causal_budget_and_prefix_dependence():
    g = torch.Generator().manual_seed(0)
    for C in (128, 200, 512, 1536):
        sq, sk = torch.rand(3, C, generator=g), torch.rand(3, C, generator=g)
        chosen = pick_causal(sq, sk)
        assert (chosen.sum(-1) == 128).all()
        # each segment of 16 takes 8
        seg = 16 * torch.arange(C) // C
        for s in range(16):
            assert (chosen[:, seg == s].sum(-1) == 8).all()
        # a decision depends on its prefix only: redraw the tail after i
        i = C // 3
        sq2, sk2 = sq.clone(), sk.clone()
        sq2[:, i + 1:], sk2[:, i + 1:] = torch.rand(3, C - i - 1, generator=g), 0
        assert torch.equal(pick_causal(sq2, sk2)[:, :i + 1], chosen[:, :i + 1])
    assert look_back(512) == 8 and look_back(128) == 2 and look_back(200) == 4


@pytest.mark.skipif("triton" not in BACKENDS, reason="needs triton")
@pytest.mark.parametrize("kw,Hkv", [(dict(num_levels=3, pooling_factor=2, topk=256), 2),
                                    (dict(num_levels=2, pooling_factor=4, topk=256), 1),
                                    (dict(num_levels=3, pooling_factor=2, topk=256,
                                          gqa="shared"), 1)])
def test_triton_cascade_reads_the_previous_chunks_scores(kw, Hkv):
    """A chunk's causal selection with the previous chunk's last coarsest window of scores in
    front (``prefix``; context parallelism) is the whole sequence's selection restricted to
    the chunk, on the kernels as on the reference. The end of the first chunk carries large
    keys, so that leaving the prefix out changes the second chunk's selection."""
    from lighthouse_attn.ops.triton.attention import cascade_scores
    from lighthouse_attn.ops.triton.select import select_with_map
    from lighthouse_attn.parallel import chunk_config

    N = 2048
    cfg = LighthouseConfig(selection="causal", backend="triton", **kw)
    q, k, _ = (x.to(DEV) for x in rand_qkv(B=1, H=2, Hkv=Hkv, N=N, D=8, seed=12))
    k[:, :, N // 2 - 8:N // 2] *= 50
    whole = select(q, k, cfg)
    local = chunk_config(cfg, N, 1)
    n, w, E = N // 2, local.coarsest_window, local.gathered_length(N // 2)
    first, second = (cascade_scores(x_q, x_k, None, local)[:2]
                     for x_q, x_k in zip(q.split(n, 2), k.split(n, 2)))
    prefix = (first[0][..., -w:], first[1][..., -w:])
    for chunk, scores, front in ((0, first, None), (1, second, prefix)):
        part = select_with_map(*scores, local, prefix=front)[0]
        level = whole.level[..., chunk * E:(chunk + 1) * E]
        offset = chunk * n // local.pooling_factor ** level
        assert torch.equal(part.level, level)
        assert torch.equal(part.index, whole.index[..., chunk * E:(chunk + 1) * E] - offset)
    alone = select_with_map(*second, local)[0]
    assert not torch.equal(alone.index, part.index)
    with pytest.raises(ValueError, match="causal selection only"):
        select_with_map(*second, chunk_config(LighthouseConfig(**kw), N, 1), prefix=prefix)
