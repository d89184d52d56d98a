"""The scatter's tail (what a chunk spills past its end under context parallelism) against a
loop over the spec's rule, with the shared-GQA repeat over query heads."""

import pytest
import torch

from lighthouse_attn import LighthouseConfig, select
from lighthouse_attn.ops.reference.scatter import scatter, scatter_with_tail


@pytest.mark.parametrize("gqa", ["expand", "shared"])
def test_tail_holds_what_the_last_windows_add_past_the_end(gqa):
    cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=256, gqa=gqa, backend="torch")
    g = torch.Generator().manual_seed(4)
    n, H, p = 4096, 4, 4
    q, k = (torch.randn(2, h, n, 8, dtype=torch.float64, generator=g) for h in (H, 2))
    sel = select(q, k, cfg)
    if gqa == "shared":
        sel = type(sel)(*(x.repeat_interleave(2, 1) for x in sel))
    S = sel.level.shape[-1]
    og = torch.randn(2, H, S, 8, dtype=torch.float64, generator=g)
    out, tail = scatter_with_tail(og, sel, n, cfg)
    assert tail.shape == (2, H, p**2 - 1, 8)
    assert torch.equal(out, scatter(og, sel, n, cfg))
    want = torch.zeros_like(tail)
    for b in range(2):
        for h in range(H):
            for s, (lvl, m) in enumerate(zip(sel.level[b, h].tolist(),
                                             sel.index[b, h].tolist())):
                width = p**lvl
                for t in range((m + 1) * width - 1, (m + 2) * width - 1):  # spec section 6
                    if t >= n:
                        want[b, h, t - n] += og[b, h, s]
    assert want.abs().sum() > 0  # some last windows were gathered
    torch.testing.assert_close(tail, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("L,p,selection", [(3, 4, "paper"), (4, 2, "causal"), (2, 8, "paper")])
def test_the_tail_comes_from_the_last_gathered_rows_only(L, p, selection):
    """What a chunk spills past its end comes from its last ``L - 1`` gathered rows alone:
    level ``l``'s last window, where emitted, is row ``S - L + l`` and reaches the first
    ``p^l - 1`` rows after the end (docs/performance.md leans on this)."""
    cfg = LighthouseConfig(num_levels=L, pooling_factor=p, topk=256, backend="torch",
                           selection=selection)
    g = torch.Generator().manual_seed(L)
    n, H = 2 * cfg.min_seq_len, 4
    q, k = (torch.randn(2, H, n, 8, dtype=torch.float64, generator=g) for _ in range(2))
    w = cfg.coarsest_window  # the last window faint in the first heads, loud in the others
    for x in (q, k):
        x[:, :H // 2, -w:] *= 0.01
        x[:, H // 2:, -w:] *= 100
    sel = select(q, k, cfg)
    S = sel.level.shape[-1]
    og = torch.randn(2, H, S, 8, dtype=torch.float64, generator=g)
    want = torch.zeros(2, H, p ** (L - 1) - 1, 8, dtype=torch.float64)
    emitted = torch.zeros(2, H, L - 1, dtype=torch.bool)
    for lvl in range(1, L):
        last = (sel.level == lvl) & (sel.index == n // p**lvl - 1)
        assert (last.nonzero()[:, 2] == S - L + lvl).all()  # never anywhere else
        emitted[..., lvl - 1] = last.any(-1)
        want[:, :, :p**lvl - 1] += (emitted[..., lvl - 1, None] * og[:, :, S - L + lvl])[
            :, :, None]
    assert emitted[..., -1].all()  # the coarsest level emits every window
    if L > 2:  # a finer level's last window: emitted in some heads only
        assert 0 < emitted[..., 0].sum() < emitted[..., 0].numel()
    torch.testing.assert_close(scatter_with_tail(og, sel, n, cfg)[1], want, rtol=0,
                               atol=1e-12)
