"""The "lighthouse" attention implementation inside transformers models (CPU, tiny configs)."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")

from tiny_models import ARCHS, LH, N, tiny_model, tokens
from transformers import AutoModelForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import lighthouse_attn.hf as lh_hf
from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.hf import attention as hf_attention
from lighthouse_attn.hf.settings import Settings


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(hf_attention, "_warned", set())


def _spy_op(monkeypatch):
    """Record (q, k, v, config, scale) of every lighthouse_attention call of the HF function."""
    calls = []

    def spy(q, k, v, config, *, scale=None, **kw):
        calls.append((q.detach().clone(), k.detach().clone(), v.detach().clone(), config, scale))
        return lighthouse_attention(q, k, v, config, scale=scale, **kw)

    monkeypatch.setattr(hf_attention, "lighthouse_attention", spy)
    return calls


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward(arch):
    model = lh_hf.configure(tiny_model(arch), LH, dense_layers=[0, -1])
    assert model.config._attn_implementation == "lighthouse"
    assert lh_hf.lighthouse_layers(model) == [1, 2]
    x = tokens()
    out = model(x, labels=x)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    for layer in model.model.layers:
        grad = layer.self_attn.q_proj.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        dense = tiny_model(arch)(x).logits
    assert (out.logits - dense).abs().max() > 1e-3  # the Lighthouse layers did change the output


@pytest.mark.parametrize("arch,gqa,selection", [("llama", "expand", "paper"),
                                                ("qwen2", "shared", "causal"),
                                                ("qwen3", "expand", "paper"),
                                                ("mistral", "shared", "paper")])
def test_attention_output_is_the_op_on_the_modules_qkv(arch, gqa, selection, monkeypatch):
    cfg = dataclasses.replace(LH, gqa=gqa, selection=selection)
    model = lh_hf.configure(tiny_model(arch), cfg, dense_layers=[0])
    model.model.layers[2].self_attn.scaling = 0.37  # the module's own scaling must be used
    calls = _spy_op(monkeypatch)
    attn_out = {}
    for i, layer in enumerate(model.model.layers):
        layer.self_attn.o_proj.register_forward_pre_hook(
            lambda mod, args, i=i: attn_out.__setitem__(i, args[0].detach().clone()))
    with torch.no_grad():
        model(tokens())
    assert len(calls) == 3
    if arch == "qwen3":  # QK-norm: the dilated scorer (tests/hf/test_qk_norm.py)
        cfg = dataclasses.replace(cfg, scorer="dilated")
    for i, (q, k, v, config, scale) in zip((1, 2, 3), calls):
        assert q.shape == (2, 4, N, 8) and k.shape == v.shape == (2, 2, N, 8)  # GQA: no expansion
        assert config == cfg
        assert scale == (0.37 if i == 2 else 8**-0.5)
        ref = lighthouse_attention(q, k, v, cfg, scale=scale)
        assert torch.equal(attn_out[i], ref.transpose(1, 2).reshape(2, N, 32))


def _fake_module(layer_idx, settings, **kw):
    return SimpleNamespace(config=SimpleNamespace(lighthouse_attn=settings.to_dict()),
                           layer_idx=layer_idx, is_causal=True, num_key_value_groups=2, **kw)


def test_function_layout_and_dense_layer_directly():
    settings = Settings(LH, dense_layers=(0,))
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, N, 8, generator=g)
    k, v = torch.randn(2, 2, 2, N, 8, generator=g)
    out, weights = lh_hf.lighthouse_attention_forward(_fake_module(1, settings), q, k, v, None,
                                                      scaling=0.3)
    assert weights is None and out.shape == (2, N, 4, 8) and out.is_contiguous()
    assert torch.equal(out, lighthouse_attention(q, k, v, LH, scale=0.3).transpose(1, 2))
    dense = _fake_module(0, settings)
    out, _ = lh_hf.lighthouse_attention_forward(dense, q, k, v, None, scaling=0.3)
    assert torch.equal(out, sdpa_attention_forward(dense, q, k, v, None, scaling=0.3)[0])


@pytest.mark.parametrize("arch", ARCHS)
def test_dense_layers_go_through_sdpa(arch, monkeypatch):
    model = lh_hf.configure(tiny_model(arch), LH, dense_layers=[0, 2])
    seen = []

    def spy(module, *args, **kwargs):
        seen.append(module.layer_idx)
        return sdpa_attention_forward(module, *args, **kwargs)

    monkeypatch.setattr(hf_attention, "sdpa_attention_forward", spy)
    calls = _spy_op(monkeypatch)
    x = tokens()
    with torch.no_grad():
        hidden = model(x, output_hidden_states=True).hidden_states
        ref = tiny_model(arch)(x, output_hidden_states=True).hidden_states
    assert seen == [0, 2] and len(calls) == 2
    assert torch.equal(hidden[1], ref[1])  # layer 0 is exactly the SDPA model's layer 0
    assert (hidden[2] - ref[2]).abs().max() > 1e-4  # layer 1 runs Lighthouse


@pytest.mark.parametrize("arch", ARCHS)
def test_to_dense_gives_exactly_the_sdpa_model(arch):
    model = lh_hf.configure(tiny_model(arch), LH, dense_layers=[0])
    x = tokens()
    with torch.no_grad():
        stage1 = model(x).logits
    assert lh_hf.to_dense(model) is model
    assert model.config._attn_implementation == "sdpa" and lh_hf.lighthouse_layers(model) == []
    ref = tiny_model(arch)
    out, want = model(x, labels=x), ref(x, labels=x)
    assert torch.equal(out.logits, want.logits)
    assert not torch.equal(out.logits, stage1)
    out.loss.backward()
    want.loss.backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad), name
    lh_hf.to_dense(model)  # idempotent
    assert model.config._attn_implementation == "sdpa"


def test_packed_rows_attend_over_the_whole_row():
    """Concatenated documents without a mask, or with an all-ones mask: plain causal rows."""
    model = lh_hf.configure(tiny_model(), LH, dense_layers=[0])
    x = tokens()
    x[:, 100] = x[:, 180] = 0  # document separators inside the row
    with torch.no_grad():
        free = model(x).logits
        ones = model(x, attention_mask=torch.ones_like(x)).logits
    assert torch.equal(free, ones)


def test_document_position_ids_raise_or_fall_back_to_sdpa():
    """position_ids restarting per document ask for a document mask Lighthouse cannot honour."""
    model = lh_hf.configure(tiny_model(), LH, dense_layers=[0])
    x = tokens()
    pos = torch.cat([torch.arange(100), torch.arange(N - 100)]).expand(2, -1)
    with pytest.raises(ValueError, match="this batch: .*position_ids.*fallback='dense'"):
        model(x, position_ids=pos)
    lh_hf.configure(model, LH, dense_layers=[0], fallback="dense")
    with pytest.warns(UserWarning, match="fallback='dense'"), torch.no_grad():
        out = model(x, position_ids=pos).logits
    with torch.no_grad():
        assert torch.equal(out, tiny_model()(x, position_ids=pos).logits)


def test_padding_mask_raises_or_falls_back_to_sdpa():
    model = lh_hf.configure(tiny_model(), LH, dense_layers=[0])
    x = tokens()
    mask = torch.ones_like(x)
    mask[1, :7] = 0  # left padding in one row
    with pytest.raises(ValueError, match="this batch: .*padding.*fallback='dense'"):
        model(x, attention_mask=mask)
    lh_hf.configure(model, LH, dense_layers=[0], fallback="dense")
    with pytest.warns(UserWarning, match="fallback='dense'"), torch.no_grad():
        out = model(x, attention_mask=mask).logits
    with torch.no_grad():
        assert torch.equal(out, tiny_model()(x, attention_mask=mask).logits)


def test_4d_masks_only_if_plain_causal():
    model = lh_hf.configure(tiny_model(), LH, dense_layers=[0])
    x = tokens()
    causal = torch.ones(N, N, dtype=torch.bool).tril().expand(2, 1, N, N)
    additive = torch.zeros(2, 1, N, N).masked_fill(~causal, torch.finfo(torch.float32).min)
    with torch.no_grad():
        free = model(x).logits
        torch.testing.assert_close(model(x, attention_mask=causal).logits, free)
        torch.testing.assert_close(model(x, attention_mask=additive).logits, free)
    holes = causal.clone()
    holes[:, :, 50, 3] = False
    with pytest.raises(ValueError, match="not plain causal"):
        model(x, attention_mask=holes)


def test_kv_cache_generation_raises_with_the_fix():
    model = lh_hf.configure(tiny_model(use_cache=True), LH, dense_layers=[0]).eval()
    with pytest.raises(ValueError, match="KV cache.*to_dense"):
        model.generate(tokens(batch=1), attention_mask=torch.ones(1, N, dtype=torch.long),
                       max_new_tokens=2, do_sample=False, pad_token_id=0)
    lh_hf.to_dense(model)
    out = model.generate(tokens(batch=1), attention_mask=torch.ones(1, N, dtype=torch.long),
                         max_new_tokens=2, do_sample=False, pad_token_id=0)
    assert out.shape == (1, N + 2)


def test_non_causal_and_dropout_and_sliding_window_raise():
    model = lh_hf.configure(tiny_model(), LH, dense_layers=[0])
    model.config.is_causal = False
    with pytest.raises(ValueError, match="non-causal"):
        model(tokens())
    settings = Settings(LH)
    q = torch.randn(1, 4, N, 8)
    k = v = torch.randn(1, 2, N, 8)
    with pytest.raises(ValueError, match="non-causal"):
        lh_hf.lighthouse_attention_forward(_fake_module(0, settings), q, k, v, None,
                                           is_causal=False)
    with pytest.raises(ValueError, match="dropout"):
        lh_hf.lighthouse_attention_forward(_fake_module(0, settings), q, k, v, None, dropout=0.1)

    model = lh_hf.configure(tiny_model(attention_dropout=0.1), LH, dense_layers=[0])
    with pytest.raises(ValueError, match="dropout"):
        model(tokens())
    with torch.no_grad():
        model.eval()(tokens())  # no dropout in eval mode

    mistral = lh_hf.configure(tiny_model("mistral", sliding_window=128), LH, dense_layers=[0])
    with pytest.raises(ValueError, match="window.* of 128 tokens"):
        mistral(tokens())
    mistral = lh_hf.configure(tiny_model("mistral", sliding_window=N), LH, dense_layers=[0])
    with torch.no_grad():
        mistral(tokens())  # a window covering the whole sequence is plain causal


def test_short_sequence_raises_or_falls_back():
    model = lh_hf.configure(tiny_model(), LH, dense_layers=[0])
    x = tokens(n=128)
    with pytest.raises(ValueError, match=r"layer 1\).*too short.*short_seq='dense'"):
        model(x)
    lh_hf.configure(model, dataclasses.replace(LH, short_seq="dense"), dense_layers=[0])
    with pytest.warns(UserWarning, match="short_seq='dense'"), torch.no_grad():
        out = model(x).logits
    with torch.no_grad():
        torch.testing.assert_close(out, tiny_model()(x).logits, rtol=1e-5, atol=1e-5)


def test_configure_is_required_and_validated():
    lh_hf.register()
    torch.manual_seed(0)
    from tiny_models import tiny_config

    bare = AutoModelForCausalLM.from_config(tiny_config(), attn_implementation="lighthouse")
    with pytest.raises(ValueError, match="configure"):
        bare(tokens())
    with pytest.raises(ValueError, match="out of range for a model with 4 layers"):
        lh_hf.configure(tiny_model(), LH, dense_layers=[4])
    with pytest.raises(ValueError, match="fallback"):
        lh_hf.configure(tiny_model(), LH, fallback="sdpa")
    with pytest.raises(ValueError, match="LighthouseConfig"):
        lh_hf.configure(tiny_model(), {"num_levels": 2})
    with pytest.raises(ValueError, match="PreTrainedModel"):
        lh_hf.configure(torch.nn.Linear(2, 2), LH)


def test_settings_round_trip_and_errors():
    s = Settings(LighthouseConfig(num_levels=3, topk=256, gqa="shared"), (0, 5), "dense")
    assert Settings.from_dict(s.to_dict()) == s
    assert s.lighthouse_layers(7) == (1, 2, 3, 4, 6)
    with pytest.raises(ValueError, match="keys"):
        Settings.from_dict({"lighthouse": {}})
    with pytest.raises(ValueError, match="not a LighthouseConfig"):
        Settings.from_dict({"lighthouse": {"levels": 3}, "dense_layers": [], "fallback": "error"})
    with pytest.raises(ValueError, match="topk"):
        Settings.from_dict({"lighthouse": {"topk": 100}, "dense_layers": [], "fallback": "error"})
    with pytest.raises(ValueError, match="dense_layers"):
        Settings.from_dict({"lighthouse": {}, "dense_layers": [-1], "fallback": "error"})


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_bf16_training_step_runs_the_op(device, monkeypatch):
    model = lh_hf.configure(tiny_model().to(device, torch.bfloat16), LH, dense_layers=[0])
    calls = _spy_op(monkeypatch)
    x = tokens().to(device)
    out = model(x, labels=x)
    out.loss.backward()
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert len(calls) == 3 and all(c[0].dtype == torch.bfloat16 for c in calls)
    grad = model.model.layers[1].self_attn.q_proj.weight.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
