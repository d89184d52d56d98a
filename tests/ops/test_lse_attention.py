"""Attention pieces with their logsumexps (``ops.lse_attention``), the inner kernels of
context parallelism: a square causal piece over the last ``E`` keys merged with an unmasked
piece over the keys before them is attention with a lower-right causal mask, checked against
SDPA with torch's lower-right causal bias, forward and backward."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from lighthouse_attn.ops import lse_attention
from lighthouse_attn.ops.lse_attention import attention_backward, attention_forward, merge


def _reference(q, k, v, scale):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    return F.scaled_dot_product_attention(q, k, v, scale=scale,
                                          attn_mask=causal_lower_right(q.shape[2], k.shape[2]))


def _reference_lse(q, k, scale):
    E, M = q.shape[2], k.shape[2]
    acc = torch.promote_types(q.dtype, torch.float32)
    s = (q.to(acc) @ k.to(acc).repeat_interleave(q.shape[1] // k.shape[1], 1)
         .transpose(-1, -2)) * scale
    hidden = torch.ones(E, M, dtype=torch.bool, device=q.device).triu(M - E + 1)
    return torch.logsumexp(s.masked_fill(hidden, float("-inf")), -1)


def _inputs(E, M, H, Hkv, D, dtype, device="cpu", seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    shapes = ((2, H, E, D), (2, Hkv, M, D), (2, Hkv, M, D))
    return [torch.randn(*s, dtype=dtype, device=device, generator=g).requires_grad_()
            for s in shapes]


def _lower_right(q, k, v, scale):
    """Lower-right causal attention as two pieces, as the context-parallel layers run it."""
    past = k.shape[2] - q.shape[2]
    out, lse, own = attention_forward(q, k[:, :, past:], v[:, :, past:], scale, causal=True)
    if not past:
        return out, lse, [own]
    out_p, lse_p, earlier = attention_forward(q, k[:, :, :past], v[:, :, :past], scale,
                                              causal=False)
    merge(out, lse, out_p, lse_p)
    return out, lse, [own, earlier]


def _lower_right_backward(dout, q, k, v, out, lse, saved, scale):
    past = k.shape[2] - q.shape[2]
    dq, dk, dv = attention_backward(dout, q, k[:, :, past:], v[:, :, past:], out, lse,
                                    saved[0], scale, causal=True)
    if not past:
        return dq, dk, dv
    dq_p, dk_p, dv_p = attention_backward(dout, q, k[:, :, :past], v[:, :, :past], out, lse,
                                          saved[1], scale, causal=False)
    return dq + dq_p, torch.cat([dk_p, dk], 2), torch.cat([dv_p, dv], 2)


@pytest.mark.parametrize("kernel", ["cpu", "math"])
@pytest.mark.parametrize("E,M,H,Hkv,rows", [(5, 12, 4, 2, 2), (7, 7, 2, 2, 3),
                                            (16, 40, 4, 1, 1024)])
def test_merged_pieces_equal_a_lower_right_mask(kernel, E, M, H, Hkv, rows, monkeypatch):
    if kernel == "math":  # the path of devices without a flash kernel for these inputs
        monkeypatch.setattr(lse_attention, "_cpu_flash_applies", lambda q: False)
    monkeypatch.setattr(lse_attention, "_ROWS", rows)  # several row blocks, a ragged last one
    q, k, v = _inputs(E, M, H, Hkv, 8, torch.float64)
    ref = _reference(q, k, v, 0.3)
    dout = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (q, k, v), dout)
    with torch.no_grad():
        out, lse, saved = _lower_right(q, k, v, 0.3)
        got = _lower_right_backward(dout, q, k, v, out, lse, saved, 0.3)
    assert {s[0] for s in saved} == {kernel}
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(lse, _reference_lse(q, k, 0.3), rtol=0, atol=1e-12)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_a_piece_alone_is_plain_attention():
    q, k, v = _inputs(6, 6, 2, 2, 8, torch.float64)
    with torch.no_grad():
        causal = attention_forward(q, k, v, 0.5, causal=True)[0]
        full = attention_forward(q, k, v, 0.5, causal=False)[0]
        torch.testing.assert_close(causal, F.scaled_dot_product_attention(
            q, k, v, scale=0.5, is_causal=True), rtol=0, atol=1e-12)
        torch.testing.assert_close(full, F.scaled_dot_product_attention(q, k, v, scale=0.5),
                                   rtol=0, atol=1e-12)
    assert (causal - full).abs().max() > 1e-3


def test_a_causal_piece_must_be_square():
    q, k, v = _inputs(8, 12, 2, 2, 8, torch.float32)
    with pytest.raises(ValueError, match="causal piece is square"):
        attention_forward(q, k, v, 1.0, causal=True)


def _strided(x):
    """``x`` as a non-contiguous view (every other row of a larger tensor), as callers that
    slice their saved outputs and logsumexps pass them."""
    return torch.stack([x, torch.full_like(x, 7.0)], 3).flatten(2, 3)[:, :, ::2]


@pytest.mark.parametrize("kernel", ["cpu", "math"])
def test_backward_reads_strided_outputs_and_logsumexps(kernel, monkeypatch):
    if kernel == "math":
        monkeypatch.setattr(lse_attention, "_cpu_flash_applies", lambda q: False)
    q, k, v = _inputs(6, 14, 4, 2, 8, torch.float64)
    dout = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        out, lse, saved = _lower_right(q, k, v, 0.3)
        want = _lower_right_backward(dout, q, k, v, out, lse, saved, 0.3)
        got = _lower_right_backward(_strided(dout), q, k, v, _strided(out), _strided(lse),
                                    saved, 0.3)
    assert not _strided(lse).is_contiguous()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel,dtype", [
    ("cudnn", torch.bfloat16), ("cudnn", torch.float16), ("flash", torch.bfloat16),
    ("flash", torch.float16),  # flash: the deterministic and cuDNN-less path
    ("efficient", torch.float32),  # whose logsumexp comes padded to 32 rows
])
@pytest.mark.parametrize("E,M", [(1000, 3000), (2048, 2048), (512, 4096)])
def test_cuda_kernels_match_the_fp64_reference(kernel, dtype, E, M, monkeypatch):
    if kernel == "flash":
        monkeypatch.setattr(lse_attention, "cudnn_applies", lambda q: False)
    q, k, v = _inputs(E, M, 8, 2, 128, dtype, device="cuda", seed=1)
    ref_in = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref = _reference(*ref_in, 128**-0.5)
    dout = torch.randn_like(ref)
    want = torch.autograd.grad(ref, ref_in, dout)
    with torch.no_grad():
        out, lse, saved = _lower_right(q, k, v, 128**-0.5)
        assert {s[0] for s in saved} == {kernel}, f"the {kernel} kernels should run these"
        # strided outputs and logsumexps, as the context-parallel layers pass them
        got = _lower_right_backward(_strided(dout.to(dtype)), q, k, v, _strided(out),
                                    _strided(lse), saved, 128**-0.5)
    tol = 2e-3 if dtype == torch.float32 else 2e-2
    for a, b in [(out, ref), (lse, _reference_lse(*ref_in[:2], 128**-0.5)), *zip(got, want)]:
        assert a.shape == b.shape
        assert ((a.double() - b).norm() / b.norm()).item() < tol
