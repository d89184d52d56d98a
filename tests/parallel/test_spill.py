"""The spill's hand-written gradient (``parallel/spill.py``) against autograd through its
forward, on a real selection of two chunks, with the shared-GQA repeat over query heads."""

import pytest
import torch

from lighthouse_attn import LighthouseConfig, select
from lighthouse_attn.parallel.spill import add_spill_grad, spill, spill_plan


@pytest.mark.parametrize("gqa", ["expand", "shared"])
def test_spill_gradient_is_the_adjoint_of_the_spill(gqa):
    cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=256, gqa=gqa, backend="torch")
    g = torch.Generator().manual_seed(4)
    n, H = 4096, 4
    q, k = (torch.randn(2, h, n, 16, dtype=torch.float64, generator=g) for h in (H, 2))
    selection = select(q, k, cfg)
    plan = spill_plan(selection, cfg, n, heads=H, acc=torch.float64)
    assert plan.found.sum() > 0  # some last windows were gathered
    S = selection.level.shape[-1]
    og = torch.randn(2, H, S, 16, dtype=torch.float64, generator=g, requires_grad=True)
    out = spill(og, plan)
    assert out.shape == (2, H, 15, 16)
    dspill, dog = torch.randn_like(out), torch.randn_like(og)
    want = dog + torch.autograd.grad(out, og, dspill)[0]
    got = add_spill_grad(dog, dspill, plan)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert not torch.equal(got, dog)
