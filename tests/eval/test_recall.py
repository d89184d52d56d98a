"""Recall of dense attention mass (eval recall): bounds, monotonicity, the oracle, and a
hand-built input whose attention sits on one known window."""

import torch

from lighthouse_attn import LighthouseConfig
from lighthouse_attn.eval.recall import attention_mass, exact_mask, layer_recall, oracle_selection
from lighthouse_attn.ops.reference.select import select_from_scores

CFG = LighthouseConfig(num_levels=2, pooling_factor=2, topk=128)  # 128 of 256 windows at N=512


def _qkv(n=512, h=2, h_kv=1, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, h, n, d, generator=g, dtype=torch.float64)
    k, v = (torch.randn(1, h_kv, n, d, generator=g, dtype=torch.float64) for _ in range(2))
    return q, k, v


def test_attention_mass_matches_the_full_matrix():
    q, k, _ = _qkv(n=300)
    keep = torch.rand(2, 1, 2, 300, generator=torch.Generator().manual_seed(1)) > 0.5
    received, kept = attention_mass(q, k, keep, block=64)
    kk = k.repeat_interleave(2, dim=1)
    a = ((q @ kk.transpose(-1, -2)) / 4).masked_fill(
        torch.ones(300, 300, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    torch.testing.assert_close(received, a.sum(-2))
    for m in range(2):
        torch.testing.assert_close(kept[m], (a * keep[m, :, :, None, :]).sum(-1).mean(-1))


def test_recall_is_one_when_the_budget_covers_everything_and_lies_in_0_1():
    q, k, v = _qkv()
    full = layer_recall(q, k, v, LighthouseConfig(num_levels=1, topk=128))
    for name in ("selection", "oracle", "random"):
        assert abs(full[name]["exact"] - 1) < 1e-9 and abs(full[name]["pooled"]) < 1e-9
    r = layer_recall(q, k, v, CFG)
    for name in ("selection", "oracle", "random"):
        assert 0 <= r[name]["exact"] <= 1 and len(r[name]["exact_per_head"]) == 2


def test_keeping_more_keys_never_lowers_recall():
    """For a fixed selection, a larger budget that keeps a superset of keys keeps at least
    as much mass (the recall is a sum of non-negative masses over the kept keys)."""
    q, k, _ = _qkv()
    g = torch.Generator().manual_seed(3)
    order = torch.randperm(512, generator=g)
    masks = torch.zeros(5, 1, 2, 512, dtype=torch.bool)
    for i, size in enumerate((0, 64, 128, 256, 512)):
        masks[i, :, :, order[:size]] = True
    _, kept = attention_mass(q, k, masks)
    assert (kept[1:] >= kept[:-1] - 1e-12).all()
    assert torch.allclose(kept[0], torch.zeros(1, 2, dtype=torch.float64))
    assert torch.allclose(kept[-1], torch.ones(1, 2, dtype=torch.float64))


def test_the_oracle_keeps_at_least_what_the_selection_keeps():
    """With one refined level (L=2) the oracle's pick is the best possible one: no selection
    of the same budget keeps more."""
    for seed in range(3):
        for cfg in (CFG, LighthouseConfig(num_levels=2, pooling_factor=2, topk=128,
                                          selection="causal"),
                    LighthouseConfig(num_levels=2, pooling_factor=2, topk=128,
                                     scorer="dilated")):
            r = layer_recall(*_qkv(seed=seed), cfg, seed=seed)
            assert r["oracle"]["exact"] >= r["selection"]["exact"] - 1e-12
            assert r["oracle"]["exact"] >= r["random"]["exact"] - 1e-12


def test_a_window_that_holds_all_the_attention():
    """Every query attends to the first window W = [0, 2): recall ~1 when the selection keeps
    W, ~0 when it does not."""
    n, d = 512, 16
    g = torch.Generator().manual_seed(0)
    u = torch.randn(d, generator=g, dtype=torch.float64)
    u = 8 * u / u.norm()
    k = 0.01 * torch.randn(1, 1, n, d, generator=g, dtype=torch.float64)
    k[0, 0, :2] = u
    q = u.expand(1, 1, n, d).clone()
    received, _ = attention_mass(q, k)
    keeps_w = exact_mask(oracle_selection(received, CFG), 2, 1)
    assert keeps_w[0, 0, :2].all()
    # window scores = their index: window 0 is the lowest of 256, never among the 128 chosen
    scores = [torch.arange(n, dtype=torch.float32).view(1, 1, n),
              torch.arange(n // 2, dtype=torch.float32).view(1, 1, n // 2)]
    misses_w = exact_mask(select_from_scores(scores, scores, CFG), 2, 1)
    assert not misses_w[0, 0, :2].any()
    _, kept = attention_mass(q, k, torch.stack([keeps_w, misses_w]))
    assert kept[0].item() > 0.99 and kept[1].item() < 0.01
