"""Selection and causal order (SPEC sections 2-4) of the reference path."""

import pytest
import spec_oracle
import torch
from conftest import rand_qkv

from lighthouse_attn import LighthouseConfig, Selection, select
from lighthouse_attn.ops.reference.scores import base_scores, level_scores
from lighthouse_attn.ops.reference.select import pick_top

CONFIGS = [
    dict(num_levels=2, pooling_factor=2, topk=128),
    dict(num_levels=3, pooling_factor=2, topk=256),
    dict(num_levels=3, pooling_factor=3, topk=128),
    dict(num_levels=3, pooling_factor=4, topk=128),
    dict(num_levels=4, pooling_factor=2, topk=128),
]


def _as_lists(sel: Selection):
    return [[list(zip(lv.tolist(), ix.tolist())) for lv, ix in zip(lb, ib)]
            for lb, ib in zip(sel.level, sel.index)]


@pytest.mark.parametrize("kw", CONFIGS)
def test_selection_matches_oracle(kw):
    cfg = LighthouseConfig(**kw)
    N = cfg.min_seq_len * 2
    q, k, v = rand_qkv(B=2, H=2, N=N, seed=1)
    sel = select(q, k, cfg)
    assert sel.level.shape == (2, 2, cfg.gathered_length(N))
    assert _as_lists(sel) == spec_oracle.select(q, k, v, cfg)


@pytest.mark.parametrize("gqa", ["expand", "shared"])
@pytest.mark.parametrize("scorer", ["norm", "dilated"])
def test_selection_gqa_and_scorers_match_oracle(gqa, scorer):
    cfg = LighthouseConfig(num_levels=2, pooling_factor=2, topk=128, gqa=gqa, scorer=scorer,
                           dilation=4)
    q, k, v = rand_qkv(B=1, H=4, Hkv=2, N=512, seed=2)
    sel = select(q, k, cfg, v=v)
    assert sel.level.shape[1] == (2 if gqa == "shared" else 4)
    assert _as_lists(sel) == spec_oracle.select(q, k, v, cfg)


@pytest.mark.parametrize("kw", CONFIGS + [dict(num_levels=1, topk=128)])
def test_gathered_length_formula(kw):
    cfg = LighthouseConfig(**kw)
    for N in (cfg.min_seq_len, cfg.min_seq_len + cfg.seq_len_multiple):
        L, p, K = cfg.num_levels, cfg.pooling_factor, cfg.topk
        expect = N // p ** (L - 1) + (L - 1) * p * K
        assert cfg.gathered_length(N) == expect
        q, k, _ = rand_qkv(N=N, H=1)
        assert select(q, k, cfg).level.shape[-1] == expect


@pytest.mark.parametrize("kw", CONFIGS)
def test_leaves_tile_the_sequence_and_children_present(kw):
    cfg = LighthouseConfig(**kw)
    p = cfg.pooling_factor
    N = cfg.min_seq_len * 2
    q, k, _ = rand_qkv(B=2, H=2, N=N, seed=3)
    sel = select(q, k, cfg)
    refined = sel.refined(p)
    start, end = sel.window(p)
    for b in range(2):
        for h in range(2):
            leaf = ~refined[b, h]
            s, e = start[b, h][leaf], end[b, h][leaf]
            # leaves in key order are contiguous windows covering [0, N) exactly
            assert s[0] == 0 and e[-1] == N and torch.equal(s[1:], e[:-1])
            present = set(zip(sel.level[b, h].tolist(), sel.index[b, h].tolist()))
            assert len(present) == sel.level.shape[-1]  # no duplicates
            for lvl, m in zip(sel.level[b, h][refined[b, h]].tolist(),
                              sel.index[b, h][refined[b, h]].tolist()):
                assert all((lvl - 1, p * m + j) in present for j in range(p))
            # every refined entry comes after all its descendants (keys end - 2^-l)
            n_refined = int(refined[b, h].sum())
            assert n_refined == cfg.num_tiles * 128 * (cfg.num_levels - 1)


def test_hand_worked_example():
    """N=512, L=2, p=2, K=128: level 1 has 256 entries in one tile. Level-1 query scores
    rise with m (A = 192..255), key scores fall with m (B = 0..63), so 64..191 stay coarse."""
    N, D = 512, 4
    q = torch.zeros(1, 1, N, D)
    k = torch.zeros(1, 1, N, D)
    m = torch.arange(256, dtype=torch.float32)
    q[0, 0, 0::2, 0] = 1 + m          # level-1 sq = max over (2m, 2m+1) = 1 + m
    q[0, 0, 1::2, 1] = 0.5
    k[0, 0, 1::2, 0] = 256 - m        # level-1 sk = 256 - m
    k[0, 0, 0::2, 1] = 0.5
    sel = select(q, k, LighthouseConfig(num_levels=2, pooling_factor=2, topk=128))
    expect = []
    for j in range(256):
        if j < 64 or j >= 192:
            expect += [(0, 2 * j), (0, 2 * j + 1), (1, j)]
        else:
            expect.append((1, j))
    assert _as_lists(sel)[0][0] == expect


def test_ties_go_to_lower_index():
    cfg = LighthouseConfig(num_levels=2, pooling_factor=2, topk=128)
    q = torch.ones(1, 1, 512, 4)
    sel = select(q, q.clone(), cfg)
    refined = sel.index[sel.refined(2)].tolist()
    assert refined == list(range(128))  # A = 0..63, then B = 64..127


def test_pick_top_independent_of_candidate_order():
    g = torch.Generator().manual_seed(4)
    C = 384
    sq = torch.randint(0, 20, (3, C), generator=g).float()  # many ties on purpose
    sk = torch.randint(0, 20, (3, C), generator=g).float()
    idx = torch.arange(C).expand(3, C) * 7 + 5
    base = pick_top(sq, sk, idx)
    assert int(base.sum()) == 3 * 128
    for _ in range(5):
        perm = torch.randperm(C, generator=g)
        got = pick_top(sq[:, perm], sk[:, perm], idx[:, perm])
        assert torch.equal(got, base[:, perm])
    # the rule itself: A = top 64 by (sq desc, index asc), B = top 64 of the rest by sk
    for r in range(3):
        order_a = sorted(range(C), key=lambda c: (-sq[r, c].item(), idx[r, c].item()))[:64]
        rest = [c for c in range(C) if c not in set(order_a)]
        order_b = sorted(rest, key=lambda c: (-sk[r, c].item(), idx[r, c].item()))[:64]
        assert set(base[r].nonzero().flatten().tolist()) == set(order_a) | set(order_b)


def test_scores_carry_no_gradient():
    cfg = LighthouseConfig(num_levels=2, pooling_factor=2, topk=128, scorer="dilated")
    q, k, v = rand_qkv(N=512, requires_grad=True)
    sq, sk = base_scores(q, k, v, cfg)
    assert not sq.requires_grad and not sk.requires_grad and sq.dtype == torch.float32
    cfg = LighthouseConfig(num_levels=2, pooling_factor=2, topk=128)
    sq, sk = base_scores(q, k, v, cfg)
    assert not sq.requires_grad and not sk.requires_grad
    sel = select(q, k, cfg)
    assert not sel.level.requires_grad and sel.level.dtype == torch.int64


def test_level_scores_are_window_max_not_pooled_norm():
    s0 = torch.tensor([[1.0, 5.0, 2.0, 0.5, 3.0, 3.0, 0.1, 9.0]])
    lv = level_scores(s0, 3, 2)
    assert lv[1].tolist() == [[5.0, 2.0, 3.0, 9.0]]
    assert lv[2].tolist() == [[5.0, 9.0]]


def test_selection_with_v_only_change_is_unchanged_for_norm_scorer():
    cfg = LighthouseConfig(num_levels=3, pooling_factor=2, topk=128)
    q, k, v = rand_qkv(N=1024)
    a = select(q, k, cfg, v=v)
    b = select(q, k, cfg, v=torch.randn_like(v))
    assert torch.equal(a.level, b.level) and torch.equal(a.index, b.index)


def test_affinity_scores_are_keys_against_the_previous_windows_mean_query():
    """The ``affinity`` scorer by brute force: key ``t`` (of its query head's kv head) dotted
    with the mean query of the aligned coarsest window before the one holding ``t``."""
    from lighthouse_attn.ops.reference.scores import base_scores

    cfg = LighthouseConfig(num_levels=3, pooling_factor=2, topk=128, scorer="affinity")
    q, k, v = rand_qkv(B=1, H=4, Hkv=2, N=512, seed=3)
    sq, sk = base_scores(q, k, v, cfg)
    w = cfg.coarsest_window
    want = torch.zeros(1, 4, 512)
    for h in range(4):
        for t in range(w, 512):
            j = t // w
            want[0, h, t] = q[0, h, (j - 1) * w:j * w].double().mean(0) @ k[0, h // 2, t].double()
    torch.testing.assert_close(sk, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(sq, sk) and sk[..., :w].abs().max() == 0
