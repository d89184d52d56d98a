"""``lighthouse_attention(..., rope=(cos, sin))`` on the torch path: the op on rotated q and k,
gradients to the unrotated ones; and the checks of the tables."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import rand_qkv

from lighthouse_attn import LighthouseConfig, lighthouse_attention, select
from lighthouse_attn.ops import api as attention_module
from lighthouse_attn.ops import rope_tables
from lighthouse_attn.ops.rope import apply_rope_reference

SMALL = dict(num_levels=2, pooling_factor=2, topk=128)


def rotated_twice(fn, q, k, v, tables):
    """``fn(q, k, v, rope)`` and ``fn`` on q and k rotated first, with their gradients."""
    res = []
    for inside in (True, False):
        xs = [x.detach().clone().requires_grad_() for x in (q, k, v)]
        if inside:
            out = fn(*xs, tables)
        else:
            out = fn(*(apply_rope_reference(x, *tables) for x in xs[:2]), xs[2], None)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
        res.append((out, *torch.autograd.grad((out * w).sum(), xs)))
    return res


@pytest.mark.parametrize("kw", [SMALL, dict(num_levels=3, pooling_factor=2, topk=128,
                                            selection="causal", gqa="shared")])
def test_rope_inside_equals_rotating_first(kw):
    cfg = LighthouseConfig(backend="torch", **kw)
    q, k, v = rand_qkv(H=4, Hkv=2, N=1024, D=8, dtype=torch.float64, seed=1)
    tables = rope_tables(1024, 8, 10000.0, torch.device("cpu"))
    got, want = rotated_twice(lambda q, k, v, r: lighthouse_attention(q, k, v, cfg, rope=r),
                              q, k, v, tables)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    # and it matters: without the rotation the output is another
    assert not torch.allclose(lighthouse_attention(q, k, v, cfg), got[0])


def test_rope_with_a_selection_and_in_the_dense_fallback(monkeypatch):
    cfg = LighthouseConfig(backend="torch", **SMALL)
    q, k, v = rand_qkv(N=512, seed=2)
    tables = rope_tables(512, 8, 10000.0, torch.device("cpu"))
    qr, kr = (apply_rope_reference(x, *tables) for x in (q, k))
    sel = select(qr, kr, cfg)
    assert torch.equal(lighthouse_attention(q, k, v, cfg, selection=sel, rope=tables),
                       lighthouse_attention(qr, kr, v, cfg))
    monkeypatch.setattr(attention_module, "_warned_short", set())
    short = LighthouseConfig(short_seq="dense")
    q, k, v = rand_qkv(N=64, seed=3)
    tables = rope_tables(64, 8, 10000.0, torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = lighthouse_attention(q, k, v, short, rope=tables)
    qr, kr = (apply_rope_reference(x, *tables) for x in (q, k))
    assert torch.equal(out, F.scaled_dot_product_attention(qr, kr, v, is_causal=True))


def test_bad_tables_are_refused_with_the_rule():
    cfg = LighthouseConfig(**SMALL)
    q, k, v = rand_qkv(N=512, seed=4)
    cos, sin = rope_tables(512, 8, 10000.0, torch.device("cpu"))
    with pytest.raises(ValueError, match="pair of tensors"):
        lighthouse_attention(q, k, v, cfg, rope=cos)
    with pytest.raises(ValueError, match=r"cos must be a floating \(N, D/2\) = \(512, 4\)"):
        lighthouse_attention(q, k, v, cfg, rope=(cos[:256], sin))
    with pytest.raises(ValueError, match="sin must be a floating"):
        lighthouse_attention(q, k, v, cfg, rope=(cos, sin.long()))
    odd = [x[..., :7] for x in (q, k, v)]
    with pytest.raises(ValueError, match="even head dim"):
        lighthouse_attention(*odd, cfg, rope=(cos, sin))
