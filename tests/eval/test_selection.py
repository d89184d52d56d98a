"""Inspection: a layer's q, k, v, the leaf level of every position, and the selection plot."""

import matplotlib
import pytest
import torch
from conftest import rand_qkv
from eval_helpers import shared_run

import lighthouse_attn
from lighthouse_attn import LighthouseConfig, lighthouse_attention, select
from lighthouse_attn.eval.loading import load_checkpoint
from lighthouse_attn.eval.selection import (
    layer_qkv,
    leaf_levels,
    level_runs,
    model_selection,
    selection_summary,
)
from lighthouse_attn.ops import sdpa_causal


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return shared_run(tmp_path_factory)



def naive_leaf_levels(selection, p):
    """Loop oracle: an entry is a leaf unless its children are gathered too; a leaf (l, m)
    covers positions [m p^l, (m+1) p^l)."""
    B, H, _ = selection.level.shape
    out = []
    for b in range(B):
        rows = []
        for h in range(H):
            entries = set(zip(selection.level[b, h].tolist(), selection.index[b, h].tolist()))
            n = sum(p ** lvl for lvl, m in entries
                    if lvl == 0 or (lvl - 1, p * m) not in entries)
            row = [-1] * n
            for lvl, m in entries:
                if lvl == 0 or (lvl - 1, p * m) not in entries:
                    for t in range(m * p ** lvl, (m + 1) * p ** lvl):
                        assert row[t] == -1  # leaves do not overlap
                        row[t] = lvl
            assert -1 not in row  # and cover every position
            rows.append(row)
        out.append(rows)
    return torch.tensor(out)


@pytest.mark.parametrize("L,p,K,N,gqa", [(3, 4, 128, 4096, "expand"), (3, 2, 256, 2048, "shared"),
                                         (2, 4, 128, 512, "expand"), (1, 4, 128, 100, "expand"),
                                         (4, 2, 128, 2048, "expand")])
def test_leaf_levels_match_a_loop_oracle_and_the_budget(L, p, K, N, gqa):
    q, k, v = rand_qkv(B=2, H=4, Hkv=2, N=N, D=8, seed=L * p)
    cfg = LighthouseConfig(num_levels=L, pooling_factor=p, topk=K, gqa=gqa)
    sel = select(q, k, cfg)
    levels = leaf_levels(sel, p)
    assert levels.shape == (2, 4 if gqa == "expand" else 2, N)
    assert torch.equal(levels, naive_leaf_levels(sel, p))
    # exact counts: p*K tokens refined; (p-1)*K windows of each middle level; the rest coarsest
    counts = [(levels == lvl).sum(-1) for lvl in range(L)]
    if L == 1:
        assert bool((counts[0] == N).all())
        return
    assert bool((counts[0] == p * K).all())
    for lvl in range(1, L - 1):
        assert bool((counts[lvl] == (p - 1) * K * p ** lvl).all())
    assert bool((counts[L - 1] == N - sum(counts[:L - 1])).all())


def test_level_runs_and_summary():
    assert level_runs(torch.tensor([2, 2, 0, 1, 1, 1])) == [[0, 2, 2], [2, 3, 0], [3, 6, 1]]
    q, k, _ = rand_qkv(B=1, H=2, N=4096, D=8, seed=3)
    cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=128)
    sel = select(q, k, cfg)
    s = selection_summary(sel, 4, 3)
    assert s["seq_len"] == 4096 and s["gathered_length"] == cfg.gathered_length(4096)
    for h in s["heads"]:
        assert h["level_fraction"] == pytest.approx([512 / 4096, 384 * 4 / 4096, 128 * 16 / 4096])
        runs = h["runs"]
        assert runs[0][0] == 0 and runs[-1][1] == 4096
        assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
    levels = leaf_levels(sel, 4)[0]
    frac = s["refined_fraction"]
    for start, end, f in frac:
        assert (levels[:, start:end] == 0).float().mean(0).tolist() == [f] * (end - start)


@pytest.mark.parametrize("layer", [0, 1, 2, -1])
def test_layer_qkv_reproduces_the_layer(tiny_run, layer):
    """q, k, v from the hooks give the layer's own output, in both attention modes."""
    for mode in ("dense", "lighthouse"):
        model = load_checkpoint(tiny_run, attention=mode).model
        ids = torch.randint(0, 256, (2, 512), generator=torch.Generator().manual_seed(1))
        attn = model.layers[layer].attn
        got = {}
        handle = attn.register_forward_hook(lambda _m, _i, out: got.setdefault("out", out))
        with torch.no_grad():
            model(ids)
            handle.remove()
            q, k, v = layer_qkv(model, ids, layer)
            if attn.use_lighthouse:
                o = lighthouse_attention(q, k, v, model.config.lighthouse)
            else:
                o = sdpa_causal(q, k, v)
            out = attn.o_proj(o.transpose(1, 2).reshape(2, 512, -1))
        assert q.shape == (2, 4, 512, 8) and k.shape == v.shape == (2, 2, 512, 8)
        torch.testing.assert_close(out, got["out"], rtol=1e-5, atol=1e-6)


def test_model_selection_with_another_budget(tiny_run):
    model = load_checkpoint(tiny_run, attention="lighthouse").model
    ids = torch.randint(0, 256, (1, 2048), generator=torch.Generator().manual_seed(2))
    cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=128)
    sel = model_selection(model, ids, 2, cfg)
    q, k, v = layer_qkv(model, ids, 2)
    expected = select(q, k, cfg)
    assert torch.equal(sel.level, expected.level) and torch.equal(sel.index, expected.index)
    with pytest.raises(ValueError, match="multiple of"):
        model_selection(model, ids[:, :1001], 2)
    with pytest.raises(ValueError, match="out of range"):
        layer_qkv(model, ids, 3)


def test_plot_selection_is_exported_and_draws(tmp_path):
    assert "plot_selection" in lighthouse_attn.__all__
    q, k, _ = rand_qkv(B=2, H=3, N=1024, D=8, seed=5)
    cfg = LighthouseConfig(num_levels=3, pooling_factor=2, topk=256)
    sel = select(q, k, cfg)
    fig = lighthouse_attn.plot_selection(sel, cfg, batch=1, head=2, path=tmp_path / "s.png",
                                         title="test")
    assert (tmp_path / "s.png").stat().st_size > 10_000
    assert len(fig.axes) == 3 and "N = 1,024" in fig._suptitle.get_text()
    fig2 = lighthouse_attn.plot_selection(sel, 2)
    assert len(fig2.axes) == 2
    import matplotlib.pyplot as plt

    plt.close(fig)
    plt.close(fig2)
    assert matplotlib.get_backend().lower() == "agg"
    with pytest.raises(ValueError, match="head 3 is out of range"):
        lighthouse_attn.plot_selection(sel, cfg, head=3)
    with pytest.raises(ValueError, match="batch 2 is out of range"):
        lighthouse_attn.plot_selection(sel, cfg, batch=2)
