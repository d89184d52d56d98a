"""The RoPE kernel against the torch reference: bit for bit, forward and backward, on the
layouts the model hands it (heads split off a (B, N, H*D) projection), q and k in one launch,
the scores it can make of the rotated rows, and its dispatch."""

import pytest
import torch

pytest.importorskip("triton")

from lighthouse_attn.ops.reference.scores import row_norms  # noqa: E402
from lighthouse_attn.ops.rope import (  # noqa: E402
    apply_rope,
    apply_rope_pair,
    apply_rope_reference,
    rope_tables,
)
from lighthouse_attn.ops.triton.rope import rope, rope_pair, rope_pair_scored  # noqa: E402
from lighthouse_attn.ops.triton.scores import row_norms_and_means  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def projected(B, N, H, D, dtype, seed):
    """q as the model makes it: a (B, N, H*D) projection viewed as (B, H, N, D)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, H * D, generator=g).to(DEV, dtype)
    return x.view(B, N, H, D).transpose(1, 2).requires_grad_()


def same(a, b):
    """Bitwise equal; except that Triton's interpreter rounds fp32 to bf16 toward zero (the
    GPU to nearest even), so there bf16 results may differ by one unit in the last place."""
    if a.dtype == torch.bfloat16 and DEV == "cpu":
        torch.testing.assert_close(a.float(), b.float(), rtol=2**-7, atol=0)
        return True
    return torch.equal(a, b)


@pytest.mark.parametrize("dtype,N,D", [(torch.bfloat16, 40, 16), (torch.float32, 33, 12),
                                       (torch.float16, 17, 64)])
def test_rope_kernel_equals_reference_bitwise(dtype, N, D):
    x = projected(2, N, 3, D, dtype, seed=1)
    cos, sin = rope_tables(N, D, 10000.0, torch.device(DEV))
    ref = apply_rope_reference(x, cos, sin)
    out = rope(x, cos, sin)
    assert out.dtype == dtype and same(out, ref)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2)).to(DEV, dtype)
    (want,) = torch.autograd.grad(ref, x, g)
    (got,) = torch.autograd.grad(out, x, g)
    assert same(got, want)
    # laid out as the input, so that the model's transpose back to (B, N, H*D) is a view
    assert out.stride() == x.stride() and got.stride() == x.stride()
    assert out.transpose(1, 2).reshape(2, N, -1).data_ptr() == out.data_ptr()


def test_rope_of_a_slice_keeps_its_order_of_dimensions():
    """q cut from a fused (B, N, 3 H D) projection is not dense: the result is dense in its
    (B, N, H, D) order, and so is its gradient."""
    B, N, H, D = 1, 24, 2, 8
    qkv = torch.randn(B, N, 3 * H * D, generator=torch.Generator().manual_seed(6)).to(DEV)
    x = qkv[..., :H * D].view(B, N, H, D).transpose(1, 2).requires_grad_()
    cos, sin = rope_tables(N, D, 10000.0, torch.device(DEV))
    out = rope(x, cos, sin)
    assert out.transpose(1, 2).is_contiguous()
    assert torch.equal(out, apply_rope_reference(x, cos, sin))
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    assert grad.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rope_pair_equals_two_rotations(dtype):
    """q and k (fewer heads) in one launch each way: each as the reference, gradients too."""
    q, k = projected(2, 40, 4, 16, dtype, seed=7), projected(2, 40, 2, 16, dtype, seed=8)
    cos, sin = rope_tables(40, 16, 10000.0, torch.device(DEV))
    got = rope_pair(q, k, cos, sin)
    want = [apply_rope_reference(x, cos, sin) for x in (q, k)]
    gen = torch.Generator().manual_seed(9)
    gs = [torch.randn(x.shape, generator=gen).to(DEV, dtype) for x in want]
    for a, b in zip(got, want):
        assert same(a, b)
    for a, b in zip(torch.autograd.grad(got, (q, k), gs), torch.autograd.grad(want, (q, k), gs)):
        assert same(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("window", [None, 16, 32])
def test_rope_scores_equal_the_norm_kernel_on_its_outputs(dtype, window):
    """The norms made while rotating equal the reference norms of the rotated rows bit for
    bit; the window means equal the norm kernel's up to fp32 summation order; gradients do
    not flow into the scores."""
    q, k = projected(1, 64, 3, 16, dtype, seed=10), projected(1, 64, 1, 16, dtype, seed=11)
    cos, sin = rope_tables(64, 16, 10000.0, torch.device(DEV))
    qr, kr, *scores = rope_pair_scored(q, k, cos, sin, window)
    assert len(scores) == (2 if window is None else 4)
    assert torch.equal(scores[0], row_norms(qr.detach()))
    assert torch.equal(scores[1], row_norms(kr.detach()))
    assert not any(s.requires_grad for s in scores)
    for a, b in zip((qr, kr), rope_pair(q, k, cos, sin)):
        assert torch.equal(a, b)
    if window:
        ref = row_norms_and_means(qr.detach(), kr.detach(), window)[2:]
        for m, r in zip(scores[2:], ref):
            assert m.dtype == dtype and m.shape == r.shape
            torch.testing.assert_close(m, r, rtol=2**-7 if dtype == torch.bfloat16 else 1e-6,
                                       atol=1e-6)


@pytest.mark.parametrize("B,window", [(1, 16), (2, None)])
def test_rope_scores_of_two_chunks_are_their_batch_rows(B, window):
    """With ``chunks=2`` (a context-parallel rank's two chunks) the scores come as the
    chunks' batch rows ``(b, chunk)``, contiguous: ``as_batch`` of the whole sequence's."""
    from lighthouse_attn.parallel.layout import as_batch

    q, k = projected(B, 64, 2, 16, torch.float32, seed=13), projected(B, 64, 1, 16,
                                                                       torch.float32, seed=14)
    cos, sin = rope_tables(64, 16, 10000.0, torch.device(DEV))
    whole = rope_pair_scored(q, k, cos, sin, window)
    rows = rope_pair_scored(q, k, cos, sin, window, chunks=2)
    for a, b in zip(whole[:2], rows[:2]):
        assert torch.equal(a, b)
    for a, b in zip(whole[2:], rows[2:]):
        assert b.is_contiguous() and torch.equal(as_batch(a), b)
    with pytest.raises(ValueError, match="each chunk"):
        rope_pair_scored(q, k, cos, sin, 16, chunks=8)  # chunks of 8 rows


def test_rope_scores_reject_windows_the_kernel_cannot_pool():
    q = projected(1, 48, 1, 8, torch.float32, seed=12)
    cos, sin = rope_tables(48, 8, 10000.0, torch.device(DEV))
    with pytest.raises(ValueError, match="multiple of 16 and divides each chunk"):
        rope_pair_scored(q, q, cos, sin, 8)
    with pytest.raises(ValueError, match="multiple of 16 and divides each chunk"):
        rope_pair_scored(q, q, cos, sin, 32)  # 48 % 32


def test_rope_rejects_tables_of_another_shape():
    x = projected(1, 8, 1, 8, torch.float32, seed=3)
    cos, sin = rope_tables(16, 8, 10000.0, torch.device(DEV))
    with pytest.raises(ValueError, match=r"tables of shape \(N, D/2\)"):
        rope(x, cos, sin)
    with pytest.raises(ValueError, match=r"tables of shape \(N, D/2\)"):
        rope_pair(x, x[:, :, :4], cos[:8], sin[:8])  # k of another length


def test_apply_rope_uses_the_reference_off_cuda_and_for_fp64(monkeypatch):
    import lighthouse_attn.ops.triton.rope as kernel

    calls = []
    monkeypatch.setattr(kernel, "rope", lambda *a: calls.append(a) or apply_rope_reference(*a))
    x = projected(1, 8, 2, 8, torch.float64, seed=4)
    cos, sin = rope_tables(8, 8, 10000.0, torch.device(DEV))
    apply_rope(x, cos.double(), sin.double())
    assert not calls
    apply_rope(x.float(), cos, sin)
    assert len(calls) == (1 if DEV == "cuda" else 0)
    pairs = []
    monkeypatch.setattr(kernel, "rope_pair", lambda *a: pairs.append(a) or a[:2])
    apply_rope_pair(x, x, cos.double(), sin.double())
    apply_rope_pair(x.float(), x.float(), cos, sin)
    assert len(pairs) == (1 if DEV == "cuda" else 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rope_kernel_equals_reference_at_model_size():
    x = projected(1, 4096, 8, 128, torch.bfloat16, seed=5)
    cos, sin = rope_tables(4096, 128, 500000.0, torch.device("cuda"))
    ref, out = apply_rope_reference(x, cos, sin), apply_rope(x, cos, sin)
    g = torch.randn_like(ref)
    assert torch.equal(out, ref)
    assert torch.equal(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    k = projected(1, 4096, 2, 128, torch.bfloat16, seed=6)
    qr, kr, nq, nk, mq, mk = rope_pair_scored(x, k, cos, sin, 16)
    assert torch.equal(qr, ref) and torch.equal(kr, apply_rope_reference(k, cos, sin))
    want = row_norms_and_means(qr.detach(), kr.detach(), 16)
    assert torch.equal(nq, want[0]) and torch.equal(nk, want[1])
    for m, r in zip((mq, mk), want[2:]):
        torch.testing.assert_close(m, r, rtol=2**-7, atol=1e-6)
