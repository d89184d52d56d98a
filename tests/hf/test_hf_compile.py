"""A model configured for Lighthouse compiles (with and without fullgraph) and still refuses
packed-document batches."""

import pytest
import torch

pytest.importorskip("transformers")

from tiny_models import LH, tiny_model, tokens

import lighthouse_attn.hf as lh_hf


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("fullgraph", [False, True])
def test_compiles_and_matches_eager(arch, fullgraph):
    torch._dynamo.reset()
    model = lh_hf.configure(tiny_model(arch), LH, dense_layers=[0])
    x = tokens()
    eager = model(x, labels=x)
    eager.loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=fullgraph)
    out = compiled(x, labels=x)
    out.loss.backward()
    torch.testing.assert_close(out.logits, eager.logits)
    for a, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, a)


def test_compiled_model_refuses_packed_documents():
    torch._dynamo.reset()
    model = lh_hf.configure(tiny_model(), LH, dense_layers=[0])
    x = tokens()
    n = x.shape[1]
    packed = torch.cat([torch.arange(n // 2), torch.arange(n - n // 2)]).expand(2, n)
    with pytest.raises(ValueError, match="document mask"):  # eager: before any mask is built
        model(x, position_ids=packed)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    compiled(x, position_ids=torch.arange(n).expand(2, n))  # plain rows run
    with pytest.raises(RuntimeError, match="packed documents"):
        compiled(x, position_ids=packed)


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_compiles_with_inductor_on_gpu(arch):
    torch._dynamo.reset()
    model = lh_hf.configure(tiny_model(arch).cuda(), LH, dense_layers=[0])
    x = tokens().cuda()
    eager = model(x, labels=x)
    eager.loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True)  # inductor, the Triton kernels inside
    out = compiled(x, labels=x)
    out.loss.backward()
    torch.testing.assert_close(out.logits, eager.logits, rtol=2e-4, atol=2e-4)
    for a, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, a, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
def test_compiled_model_takes_a_materialised_causal_mask(dtype):
    """Some transformers versions hand the layers a materialised causal mask under tracing:
    its values cannot be branched on in a graph, so they are asserted at run time."""
    torch._dynamo.reset()
    model = lh_hf.configure(tiny_model(), LH, dense_layers=[0])
    x = tokens()
    n = x.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool).tril().expand(2, 1, n, n)
    mask = causal if dtype == torch.bool else torch.zeros(2, 1, n, n).masked_fill(
        ~causal, torch.finfo(torch.float32).min)
    eager = model(x).logits
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, attention_mask=mask).logits, eager)
    bad = mask.clone()
    bad[..., n // 2:, : n // 2] = False if dtype == torch.bool else torch.finfo(torch.float32).min
    with pytest.raises(RuntimeError, match="not plain causal"):
        compiled(x, attention_mask=bad)
