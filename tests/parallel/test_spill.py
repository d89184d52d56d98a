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
