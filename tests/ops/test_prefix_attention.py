"""Lower-right causal attention with its logsumexp (``ops.prefix_attention``), the
inner kernel of context parallelism, against SDPA with torch's lower-right causal bias."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from lighthouse_attn.ops import prefix_attention
from lighthouse_attn.ops.prefix_attention import (
    prefix_attention_backward,
    prefix_attention_forward,
)


def _reference(q, k, v, scale):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    return F.scaled_dot_product_attention(q, k, v, scale=scale,
                                          attn_mask=causal_lower_right(q.shape[2], k.shape[2]))


def _inputs(E, M, H, Hkv, D, dtype, device="cpu", seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    shapes = ((2, H, E, D), (2, Hkv, M, D), (2, Hkv, M, D))
    return [torch.randn(*s, dtype=dtype, device=device, generator=g).requires_grad_()
            for s in shapes]


@pytest.mark.parametrize("kernel", ["cpu", "math"])
@pytest.mark.parametrize("E,M,H,Hkv,rows", [(5, 12, 4, 2, 2), (7, 7, 2, 2, 3),
                                            (16, 40, 4, 1, 1024)])
def test_matches_sdpa_with_a_lower_right_mask(kernel, E, M, H, Hkv, rows, monkeypatch):
    if kernel == "math":  # the path of devices without a flash kernel for these inputs
        monkeypatch.setattr(prefix_attention, "_cpu_flash_applies", lambda q: False)
    monkeypatch.setattr(prefix_attention, "_ROWS", rows)  # several row blocks, a ragged last one
    q, k, v = _inputs(E, M, H, Hkv, 8, torch.float64)
    ref = _reference(q, k, v, 0.3)
    dout = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (q, k, v), dout)
    with torch.no_grad():
        out, lse, saved = prefix_attention_forward(q, k, v, 0.3)
        got = prefix_attention_backward(dout, q, k, v, out, lse, saved, 0.3)
    assert saved[0] == kernel
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # the logsumexp is the row's, over the keys it sees
    s = (q @ k.repeat_interleave(H // Hkv, 1).transpose(-1, -2)) * 0.3
    s = s.masked_fill(torch.ones(E, M, dtype=torch.bool).triu(M - E + 1), float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(s, -1), rtol=0, atol=1e-12)


def test_the_mask_is_lower_right_not_upper_left():
    q, k, v = _inputs(4, 10, 2, 2, 8, torch.float64)
    with torch.no_grad():
        out = prefix_attention_forward(q, k, v, 0.5)[0]
        upper_left = F.scaled_dot_product_attention(q, k, v, scale=0.5, is_causal=True)
    torch.testing.assert_close(out, _reference(q, k, v, 0.5), rtol=0, atol=1e-12)
    assert (out - upper_left).abs().max() > 1e-3


def test_fewer_keys_than_queries_are_refused():
    q, k, v = _inputs(8, 4, 2, 2, 8, torch.float32)
    with pytest.raises(ValueError, match="at least as many keys"):
        prefix_attention_forward(q, k, v, 1.0)


def _strided(x):
    """``x`` as a non-contiguous view (every other row of a larger tensor), as callers that
    slice their saved outputs and logsumexps pass them."""
    return torch.stack([x, torch.full_like(x, 7.0)], 3).flatten(2, 3)[:, :, ::2]


@pytest.mark.parametrize("kernel", ["cpu", "math"])
def test_backward_reads_strided_outputs_and_logsumexps(kernel, monkeypatch):
    if kernel == "math":
        monkeypatch.setattr(prefix_attention, "_cpu_flash_applies", lambda q: False)
    q, k, v = _inputs(6, 14, 4, 2, 8, torch.float64)
    dout = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        out, lse, saved = prefix_attention_forward(q, k, v, 0.3)
        want = prefix_attention_backward(dout, q, k, v, out, lse, saved, 0.3)
        got = prefix_attention_backward(_strided(dout), q, k, v, _strided(out), _strided(lse),
                                        saved, 0.3)
    assert not _strided(lse).is_contiguous()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["cudnn", "flash"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("E,M", [(1000, 3000), (2048, 2048), (512, 4096)])
def test_cuda_kernels_match_the_fp32_reference(kernel, dtype, E, M, monkeypatch):
    if kernel == "flash":  # the deterministic and cuDNN-less path
        monkeypatch.setattr(prefix_attention, "cudnn_applies", lambda q: False)
    q, k, v = _inputs(E, M, 8, 2, 128, dtype, device="cuda", seed=1)
    ref_in = [x.detach().float().requires_grad_() for x in (q, k, v)]
    ref = _reference(*ref_in, 128**-0.5)
    dout = torch.randn_like(ref)
    want = torch.autograd.grad(ref, ref_in, dout)
    with torch.no_grad():
        out, lse, saved = prefix_attention_forward(q, k, v, 128**-0.5)
        assert saved[0] == kernel, f"the {kernel} kernels should run these inputs"
        # strided outputs and logsumexps, as the dense context-parallel layer passes them
        got = prefix_attention_backward(_strided(dout.to(dtype)), q, k, v, _strided(out),
                                        _strided(lse), saved, 128**-0.5)
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=2e-2)
    s = (ref_in[0] @ ref_in[1].repeat_interleave(4, 1).transpose(-1, -2)) * 128**-0.5
    s = s.masked_fill(torch.ones(E, M, dtype=torch.bool, device="cuda").triu(M - E + 1),
                      float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(s, -1), rtol=0, atol=2e-2)
    for a, b in zip(got, want):
        assert ((a.float() - b).norm() / b.norm()).item() < 2e-2
