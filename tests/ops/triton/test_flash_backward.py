"""The deterministic causal attention backward (ops/triton/flash_backward.py) against torch
autograd of fp64 math attention; the CPU interpreter in CI, the GPU when present."""

from contextlib import nullcontext

import pytest
import torch
from conftest import rand_qkv

pytest.importorskip("triton")

from lighthouse_attn.ops.triton.flash_backward import KernelConfig, causal_attention_backward

DEV = "cuda" if torch.cuda.is_available() else "cpu"
# The interpreter multiplies bf16 tiles as raw 16-bit integers (Triton 3.9), so the CPU runs the
# half-precision path in fp16; the GPU runs bf16.
HALF = torch.bfloat16 if DEV == "cuda" else torch.float16
SMALL = dict(dkdv=KernelConfig(16, 32, 4, 2), dq=KernelConfig(32, 16, 4, 2))
WIDE = dict(dkdv=KernelConfig(32, 16, 4, 2), dq=KernelConfig(16, 32, 4, 2))
LARGE = dict(dkdv=KernelConfig(64, 128, 4, 2), dq=KernelConfig(128, 64, 4, 2))


def reference(q, k, v, do, scale):
    """fp64 causal attention: output, natural-log logsumexp (B, H, S) and (dq, dk, dv) for the
    output gradient ``do`` (none if ``do`` is None)."""
    group = q.shape[1] // k.shape[1]
    q, k, v = (x.detach().double().requires_grad_() for x in (q, k, v))
    s = scale * q @ k.repeat_interleave(group, 1).transpose(-1, -2)
    S = q.shape[2]
    s = s.masked_fill(~torch.ones(S, S, dtype=torch.bool, device=q.device).tril(), -torch.inf)
    lse = torch.logsumexp(s, -1)
    o = torch.softmax(s, -1) @ v.repeat_interleave(group, 1)
    grads = None if do is None else torch.autograd.grad(o, (q, k, v), do.double())
    return o.detach(), lse.detach(), grads


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def inputs(S, D, Hkv, dtype=torch.float32, seed=0, B=2, H=4):
    q, k, v = rand_qkv(B=B, H=H, Hkv=Hkv, N=S, D=D, dtype=dtype, seed=seed, device=DEV)
    do = rand_qkv(B=B, H=H, N=S, D=D, dtype=dtype, seed=seed + 1, device=DEV)[0]
    return q, k, v, do


@pytest.mark.parametrize("S,D,Hkv,blocks", [
    (64, 16, 4, SMALL),
    (192, 32, 2, LARGE),   # S is not a multiple of the key block (128)
    (200, 16, 1, SMALL),   # nor of any block
    (256, 32, 4, WIDE),    # query blocks wider than key blocks in dK/dV, narrower in dQ
])
def test_gradients_match_fp64_autograd(S, D, Hkv, blocks):
    q, k, v, do = inputs(S, D, Hkv, seed=S)
    scale = 0.7 / D**0.5
    o, lse, ref = reference(q, k, v, do, scale)
    got = causal_attention_backward(do, q, k, v, o.float(), lse.float(), scale, **blocks)
    for name, a, b in zip(("dq", "dk", "dv"), got, ref):
        assert a.shape == b.shape and a.dtype == torch.float32, name
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4, msg=name)


def test_half_precision_within_tolerance_and_bitwise_reproducible():
    q, k, v, do = inputs(192, 32, 2, dtype=HALF, seed=7)
    scale = 32**-0.5
    o, lse, ref = reference(q, k, v, do, scale)
    runs = [causal_attention_backward(do, q, k, v, o.to(HALF), lse.float(), scale, **SMALL)
            for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    for a, b in zip(runs[0], ref):
        assert a.dtype == HALF
        assert _rel(a, b) < 1e-2


def test_strided_inputs_and_lse_layout():
    """q, o, do as (B, S, H, D) storage seen as (B, H, S, D); lse as a (B, H, S, 1) slice."""
    B, H, S, D = 2, 4, 96, 16
    q, k, v, do = inputs(S, D, 2, seed=3)
    scale = D**-0.5
    o, lse, ref = reference(q, k, v, do, scale)
    bshd = lambda x: x.transpose(1, 2).contiguous().transpose(1, 2)  # noqa: E731
    lse4 = lse.float().unsqueeze(-1).expand(B, H, S, 2)[..., 0]
    got = causal_attention_backward(bshd(do), bshd(q), k, v, bshd(o.float()), lse4, scale,
                                    **SMALL)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


def test_bad_inputs_raise():
    q, k, v, do = inputs(64, 16, 2)
    lse = torch.zeros(2, 4, 64, device=DEV)
    with pytest.raises(ValueError, match="power of two"):
        x = torch.randn(2, 4, 64, 24, device=DEV)
        causal_attention_backward(x, x, x, x, x, lse, 1.0)
    with pytest.raises(ValueError, match="H % H_kv"):
        causal_attention_backward(do, q, k[:, :1].expand(2, 3, 64, 16), v, q, lse, 1.0)
    with pytest.raises(ValueError, match="fp16, bf16, fp32"):
        d = [x.double() for x in (do, q, k, v)]
        causal_attention_backward(*d, d[1], lse, 1.0)
    with pytest.raises(ValueError, match="lse must be"):
        causal_attention_backward(do, q, k, v, q, lse[..., :32], 1.0)
    with pytest.raises(ValueError, match="block_m must be a power of two"):
        causal_attention_backward(do, q, k, v, q, lse, 1.0, dq=KernelConfig(24, 16, 4, 2))


def test_backward_custom_op_passes_opcheck():
    """The op torch.compile sees: schema, fake (meta) outputs and dispatch agree with eager."""
    from lighthouse_attn.ops.inner import _attention_backward_op

    q, k, v, do = inputs(32, 16, 2, B=1, H=2)
    o, lse, _ = reference(q, k, v, do, 0.25)
    torch.library.opcheck(_attention_backward_op, (do, q, k, v, o.float(), lse.float(), 0.25))


@pytest.mark.parametrize("compiled", [False, True])
def test_autograd_function_with_a_math_forward(monkeypatch, compiled):
    """The deterministic Function's wiring (saved tensors, GQA shapes, scale), eager and under
    torch.compile without graph breaks; the cuDNN forward is swapped for fp64 math."""
    from lighthouse_attn.ops import inner

    def math_forward(q, k, v, scale):
        o, lse, _ = reference(q, k, v, None, scale)
        return o.to(q.dtype), lse.float()

    monkeypatch.setattr(inner, "forward_with_lse", math_forward)
    torch._dynamo.reset()
    q, k, v, do = inputs(64, 16, 2, B=1, H=4, seed=5)
    x = [t.detach().requires_grad_() for t in (q, k, v)]
    fn = lambda a, b, c: inner._DeterministicAttention.apply(a, b, c, 0.3)  # noqa: E731
    if compiled:
        fn = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out = fn(*x)
    grads = torch.autograd.grad(out, x, do)
    o, _, ref = reference(q, k, v, do, 0.3)
    torch.testing.assert_close(out.double(), o, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- GPU

@pytest.mark.gpu
@pytest.mark.parametrize("Hkv", [8, 2])
def test_deterministic_attention_matches_fp32_sdpa_and_is_bitwise_reproducible(Hkv):
    from lighthouse_attn.ops.inner import fast_causal_attention, sdpa_causal

    q, k, v, do = inputs(4096, 128, Hkv, dtype=torch.bfloat16, seed=11, B=1, H=8)
    runs = []
    for _ in range(2):
        x = [t.detach().requires_grad_() for t in (q, k, v)]
        out = fast_causal_attention(*x, None, deterministic=True)
        runs.append((out, *torch.autograd.grad(out, x, do)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    x = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref = sdpa_causal(*x)
    ref_grads = torch.autograd.grad(ref, x, do.float())
    assert _rel(runs[0][0], ref) < 1e-2
    for a, b in zip(runs[0][1:], ref_grads):
        assert a.shape == b.shape
        assert _rel(a, b) < 2e-2


@pytest.mark.gpu
@pytest.mark.parametrize("cudnn", [True, False])
def test_forward_lse_is_natural_log_of_scaled_scores(monkeypatch, cudnn):
    """cuDNN's softmax stats (and flash's, the fallback) in the convention the backward takes."""
    from lighthouse_attn.ops import inner

    if not cudnn:
        def refuse(*args, **kwargs):
            raise RuntimeError("refused for the test")
        monkeypatch.setattr(inner, "_CUDNN_FWD", refuse)
        # warned once per process: an earlier test's fallback must not silence this one
        monkeypatch.setattr(inner, "_warned_fallback", set())
    q, k, v, _ = inputs(1000, 64, 2, dtype=torch.bfloat16, seed=12, B=1, H=4)
    with pytest.warns(UserWarning, match="flash") if not cudnn else nullcontext():
        o, lse = inner.forward_with_lse(q, k, v, 0.1)
    ref_o, ref_lse, _ = reference(q, k, v, None, 0.1)
    assert lse.shape == (1, 4, 1000) and lse.dtype == torch.float32
    torch.testing.assert_close(lse.double(), ref_lse, rtol=0, atol=2e-2)
    assert _rel(o, ref_o) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 5e-3)])
def test_default_configs_on_gpu(dtype, tol):
    """Default launch configs at an odd length (fp32: 3xTF32 dots)."""
    for D in (64, 128):
        q, k, v, do = inputs(1000, D, 2, dtype=dtype, seed=D, B=1, H=4)
        o, lse, ref = reference(q, k, v, do, D**-0.5)
        got = causal_attention_backward(do, q, k, v, o.to(dtype), lse.float(), D**-0.5)
        for a, b in zip(got, ref):
            assert _rel(a, b) < tol
