"""Every ValueError path of the op, with its message."""

import pytest
import torch
from conftest import rand_qkv

from lighthouse_attn import LighthouseConfig, lighthouse_attention, select

CFG = LighthouseConfig(num_levels=2, pooling_factor=2, topk=128)


@pytest.mark.parametrize("make,match", [
    (lambda q, k, v: (q[0], k, v), r"q must be 4-D \(B, H, N, D\)"),
    (lambda q, k, v: (q, k.unsqueeze(0), v), "k must be 4-D"),
    (lambda q, k, v: (q, k[:1], v[:1]), "batch size B"),
    (lambda q, k, v: (q, k[:, :, :256], v[:, :, :256]), "sequence length N"),
    (lambda q, k, v: (q, k[..., :4], v[..., :4]), "head dim D"),
    (lambda q, k, v: (q, k, v[:, :, :256]), "k and v must have the same shape"),
    (lambda q, k, v: (q[:, :3], k[:, :2], v[:, :2]), "multiple of the key/value heads"),
    (lambda q, k, v: (q.long(), k, v), "must be fp16, bf16, fp32 or fp64"),
    (lambda q, k, v: (q.to(torch.float8_e4m3fn), k.to(torch.float8_e4m3fn),
                      v.to(torch.float8_e4m3fn)), "cast fp8"),
    (lambda q, k, v: (q[:0], k[:0], v[:0]), "is empty"),
    (lambda q, k, v: (q[..., :0], k[..., :0], v[..., :0]), "is empty"),
    (lambda q, k, v: (q, k.double(), v), "share one dtype"),
    (lambda q, k, v: (q.numpy(), k, v), "must be a torch.Tensor"),
])
def test_bad_inputs(make, match):
    q, k, v = rand_qkv(B=2, H=4, N=512)
    with pytest.raises(ValueError, match=match):
        lighthouse_attention(*make(q, k, v), CFG)
    with pytest.raises(ValueError, match=match):
        select(*make(q, k, v)[:2], CFG, v=make(q, k, v)[2])


def test_bad_config_object():
    q, k, v = rand_qkv()
    with pytest.raises(ValueError, match="config must be a LighthouseConfig"):
        lighthouse_attention(q, k, v, {"topk": 128})


@pytest.mark.parametrize("N,match", [
    (514, r"multiple of 4.*Nearest valid seq_len: 512 or 516"),
    (256, r"too short.*N_\(L-1\)/T >= 128.*seq_len >= 512.*short_seq='dense'"),
])
def test_bad_seq_len(N, match):
    cfg = LighthouseConfig(num_levels=2, pooling_factor=2, topk=256)
    q, k, v = rand_qkv(N=N)
    with pytest.raises(ValueError, match=match):
        lighthouse_attention(q, k, v, cfg)


def test_dilated_rules():
    cfg = LighthouseConfig(num_levels=2, pooling_factor=2, topk=128, scorer="dilated",
                           dilation=3)
    q, k, v = rand_qkv(N=512)
    with pytest.raises(ValueError, match="N % dilation == 0"):
        lighthouse_attention(q, k, v, cfg)
    with pytest.raises(ValueError, match="dilated scorer needs v"):
        select(q, k, LighthouseConfig(num_levels=2, pooling_factor=2, topk=128,
                                      scorer="dilated"))


def test_errors_leave_no_state_and_valid_call_still_works():
    q, k, v = rand_qkv(N=512)
    with pytest.raises(ValueError):
        lighthouse_attention(q, k[:, :, :256], v[:, :, :256], CFG)
    assert torch.isfinite(lighthouse_attention(q, k, v, CFG)).all()


def test_attn_fn_returning_the_wrong_shape():
    q, k, v = rand_qkv(B=1, H=2, N=512)
    with pytest.raises(ValueError, match=r"attn_fn returned \(1, 2, 512, 4\)"):
        lighthouse_attention(q, k, v, CFG, attn_fn=lambda a, b, c, s: a[..., :4])
    short = LighthouseConfig(num_levels=2, pooling_factor=2, topk=128, short_seq="dense")
    with pytest.raises(ValueError, match="attn_fn returned tuple"):
        lighthouse_attention(q[:, :, :8], k[:, :, :8], v[:, :, :8], short,
                             attn_fn=lambda a, b, c, s: (a,))


def test_absurd_num_levels_is_a_clear_error():
    with pytest.raises(ValueError, match="use num_levels <= 21"):
        LighthouseConfig(num_levels=10**6)


def test_hand_made_selections_are_validated():
    from lighthouse_attn import Selection

    q, k, v = rand_qkv(B=1, H=2, N=512)
    sel = select(q, k, CFG)
    lighthouse_attention(q, k, v, CFG, selection=sel)  # the real one passes
    with pytest.raises(ValueError, match="must be a Selection"):
        lighthouse_attention(q, k, v, CFG, selection=(sel.level, sel.index))
    order = torch.randperm(sel.level.shape[-1], generator=torch.Generator().manual_seed(0))
    shuffled = Selection(sel.level[..., order], sel.index[..., order])
    with pytest.raises(ValueError, match="not in causal order"):
        lighthouse_attention(q, k, v, CFG, selection=shuffled)
    swapped = Selection(sel.level.clone(), sel.index.clone())  # two neighbours exchanged
    swapped.index[..., [5, 6]] = swapped.index[..., [6, 5]]
    swapped.level[..., [5, 6]] = swapped.level[..., [6, 5]]
    with pytest.raises(ValueError, match="causal order|cover the sequence"):
        lighthouse_attention(q, k, v, CFG, selection=swapped)
    # a summary and a token inside its window, both unrefined: the token would read its future
    lvl, idx = sel.level.clone(), sel.index.clone()
    first_leaf_1 = int(((lvl[0, 0] == 1) & ~sel.refined(2)[0, 0]).nonzero()[0])
    tok = int(((lvl[0, 0] == 0)).nonzero()[0])
    idx[..., tok] = 2 * idx[0, 0, first_leaf_1]
    with pytest.raises(ValueError, match="causal order|cover the sequence"):
        lighthouse_attention(q, k, v, CFG, selection=Selection(lvl, idx))


def test_autocast_casts_mixed_dtypes_as_for_sdpa():
    """Under autocast the op takes q, k, v of mixed dtypes (QK-norm models hand over fp32 q, k
    and bf16 v) and computes in the autocast dtype, like SDPA; outside it, they are an error."""
    q, k, v = rand_qkv(B=1, H=2, N=512)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lighthouse_attention(q, k, v.bfloat16(), CFG)
        sel = select(q, k, CFG, v=v.bfloat16())
    want = lighthouse_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), CFG)
    assert out.dtype == torch.bfloat16 and torch.equal(out, want)
    assert torch.equal(sel.index, select(q.bfloat16(), k.bfloat16(), CFG).index)
    with pytest.raises(ValueError, match="share one dtype"):
        lighthouse_attention(q, k, v.bfloat16(), CFG)
