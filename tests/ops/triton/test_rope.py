"""The RoPE kernel against the torch reference: bit for bit, forward and backward, on the
layouts the model hands it (heads split off a (B, N, H*D) projection), and its dispatch."""

import pytest
import torch

pytest.importorskip("triton")

from lighthouse_attn.models.llama import rope_tables  # noqa: E402
from lighthouse_attn.ops.rope import apply_rope, apply_rope_reference  # noqa: E402
from lighthouse_attn.ops.triton.rope import rope  # noqa: E402

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
    assert out.dtype == dtype and out.is_contiguous() and same(out, ref)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2)).to(DEV, dtype)
    (want,) = torch.autograd.grad(ref, x, g)
    (got,) = torch.autograd.grad(out, x, g)
    assert same(got, want)


def test_rope_rejects_tables_of_another_shape():
    x = projected(1, 8, 1, 8, torch.float32, seed=3)
    cos, sin = rope_tables(16, 8, 10000.0, torch.device(DEV))
    with pytest.raises(ValueError, match=r"tables of shape \(N, D/2\)"):
        rope(x, cos, sin)


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rope_kernel_equals_reference_at_model_size():
    x = projected(1, 4096, 8, 128, torch.bfloat16, seed=5)
    cos, sin = rope_tables(4096, 128, 500000.0, torch.device("cuda"))
    ref, out = apply_rope_reference(x, cos, sin), apply_rope(x, cos, sin)
    g = torch.randn_like(ref)
    assert torch.equal(out, ref)
    assert torch.equal(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])
