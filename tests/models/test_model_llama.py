"""Llama model: shapes, attention modes, keys, RoPE, dense layers, checkpointing, compile,
presets."""

import math

import pytest
import torch

from lighthouse_attn import LighthouseConfig
from lighthouse_attn.models import PRESETS, Llama, LlamaConfig, preset_model_config
from lighthouse_attn.models import llama as llama_module
from lighthouse_attn.models.llama import rope_tables
from lighthouse_attn.ops.rope import apply_rope

TINY = LlamaConfig(d_model=32, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=48,
                   dense_layers=(0, -1),
                   lighthouse=LighthouseConfig(num_levels=2, pooling_factor=4, topk=128))
N = 512  # TINY's Lighthouse minimum


def tokens(B=2, n=N, seed=0):
    return torch.randint(0, 257, (B, n), generator=torch.Generator().manual_seed(seed))


def test_forward_shape_dtype_and_input_check():
    torch.manual_seed(0)
    model = Llama(TINY)
    logits = model(tokens())
    assert logits.shape == (2, N, 257) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="int64"):
        model(tokens().int())


def test_lighthouse_layers_get_unrepeated_gqa_kv(monkeypatch):
    calls = []
    real = llama_module.lighthouse_attention

    def spy(q, k, v, cfg):
        calls.append((tuple(q.shape), tuple(k.shape), cfg))
        return real(q, k, v, cfg)

    monkeypatch.setattr(llama_module, "lighthouse_attention", spy)
    torch.manual_seed(0)
    model = Llama(TINY)
    model(tokens())
    assert calls == [((2, 4, N, 8), (2, 2, N, 8), TINY.lighthouse)] * 2  # layers 1 and 2
    calls.clear()
    model.set_attention("dense")
    model(tokens())
    assert calls == [] and model.attention_mode == "dense"


def test_one_level_lighthouse_equals_dense():
    """SPEC: L = 1 is exactly dense causal attention, so both modes agree."""
    cfg = TINY.replace(lighthouse=LighthouseConfig(num_levels=1, pooling_factor=4, topk=128))
    torch.manual_seed(0)
    model = Llama(cfg).double()
    x = tokens(n=256)
    lh = model(x)
    model.set_attention("dense")
    torch.testing.assert_close(lh, model(x), rtol=1e-10, atol=1e-10)


def test_lighthouse_mode_changes_the_output():
    torch.manual_seed(0)
    model = Llama(TINY)
    x = tokens()
    lh = model(x)
    model.set_attention("dense")
    assert (lh - model(x)).abs().max() > 1e-4
    model.set_attention("lighthouse")
    torch.testing.assert_close(model(x), lh, rtol=0, atol=0)


def test_keys_do_not_depend_on_mode_and_load_strictly():
    torch.manual_seed(0)
    stage1 = Llama(TINY)
    dense = Llama(TINY)
    dense.set_attention("dense")
    assert list(stage1.state_dict()) == list(dense.state_dict())
    result = dense.load_state_dict(stage1.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = tokens(n=64)
    stage1.set_attention("dense")
    torch.testing.assert_close(dense(x), stage1(x), rtol=0, atol=0)


def test_dense_model_is_causal():
    torch.manual_seed(0)
    model = Llama(TINY)
    model.set_attention("dense")
    x = tokens(B=1, n=64)
    y = x.clone()
    y[0, 40] = (y[0, 40] + 1) % 257
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :40], b[:, :40], rtol=0, atol=0)
    assert (a[:, 40:] - b[:, 40:]).abs().max() > 1e-4


def test_set_attention_rejects_unknown_mode():
    with pytest.raises(ValueError, match="lighthouse.*dense"):
        Llama(TINY).set_attention("sparse")


def test_dense_layers_resolve_negative_indices_and_validate():
    assert TINY.dense_layer_indices == (0, 3)
    assert TINY.lighthouse_layer_indices == (1, 2)
    model = Llama(TINY)
    assert [b.attn.use_lighthouse for b in model.layers] == [False, True, True, False]
    model.set_attention("dense")
    assert not any(b.attn.use_lighthouse for b in model.layers)
    assert Llama(TINY.replace(dense_layers=())).layers[0].attn.use_lighthouse
    with pytest.raises(ValueError, match="out of range.*0..3 or -4..-1"):
        TINY.replace(dense_layers=(4,))


@pytest.mark.parametrize("changes,match", [
    (dict(d_model=30), "multiple of n_heads"),
    (dict(n_kv_heads=3), "multiple of n_kv_heads"),
    (dict(d_model=36, n_heads=4), "must be even"),
    (dict(ffn_hidden=0), "positive integer"),
])
def test_config_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        TINY.replace(**changes)


def test_short_sequence_in_lighthouse_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="too short"):
        Llama(TINY)(tokens(n=256))


def test_config_dict_round_trip_and_unknown_keys():
    d = TINY.to_dict()
    assert d["lighthouse"]["topk"] == 128 and d["dense_layers"] == [0, -1]
    assert LlamaConfig.from_dict(d) == TINY
    with pytest.raises(ValueError, match="unknown model config keys"):
        LlamaConfig.from_dict(dict(d, n_experts=8))


def test_rope_matches_complex_rotation_and_is_relative():
    D, n, theta = 8, 16, 10000.0
    cos, sin = rope_tables(n, D, theta, torch.device("cpu"))
    x = torch.randn(1, 1, n, D, dtype=torch.float64)
    out = apply_rope(x, cos.double(), sin.double())
    # rotate-half pairing: dims (i, i + D/2) form a complex number rotated by pos * theta^(-2i/D)
    z = torch.complex(x[..., :D // 2], x[..., D // 2:])
    freqs = torch.tensor([theta ** (-2 * i / D) for i in range(D // 2)], dtype=torch.float64)
    angle = torch.arange(n, dtype=torch.float64)[:, None] * freqs
    rotated = z * torch.polar(torch.ones_like(angle), angle)
    torch.testing.assert_close(out, torch.cat((rotated.real, rotated.imag), -1), rtol=1e-6,
                               atol=1e-6)
    # <R_m q, R_n k> depends only on m - n
    q, k = torch.randn(D, dtype=torch.float64), torch.randn(D, dtype=torch.float64)
    Q = apply_rope(q.expand(1, 1, n, D), cos.double(), sin.double())[0, 0]
    K = apply_rope(k.expand(1, 1, n, D), cos.double(), sin.double())[0, 0]
    assert math.isclose(Q[7] @ K[3], Q[12] @ K[8], rel_tol=1e-5)


def test_activation_checkpointing_gives_the_same_gradients_and_keys():
    from lighthouse_attn.train.parallelize import parallelize

    x = tokens()
    grads, keys = [], []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = parallelize(Llama(TINY), activation_checkpointing=ckpt)
        model(x).logsumexp(-1).mean().backward()
        grads.append([p.grad for p in model.parameters()])
        keys.append(list(model.state_dict()))
        model.set_attention("dense")  # blocks stay reachable through the wrapper
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert keys[0] == keys[1]  # checkpoints do not depend on the wrapping


def test_tied_embeddings_have_no_head_weight():
    model = Llama(TINY.replace(tie_embeddings=True))
    assert "lm_head.weight" not in model.state_dict()
    hidden = []
    model.norm.register_forward_hook(lambda mod, args, out: hidden.append(out))
    logits = model(tokens())
    torch.testing.assert_close(logits, hidden[0] @ model.embed.weight.T)


def test_presets_match_the_issue_and_count_parameters():
    p = PRESETS["paper-268m"]
    assert (p.d_model, p.n_layers, p.n_heads, p.n_kv_heads, p.ffn_hidden, p.rope_theta,
            p.vocab_size) == (1024, 30, 8, 8, 1536, 10000.0, 257)
    assert p.dense_layer_indices == (0, 1, 28, 29)
    assert (p.lighthouse.num_levels, p.lighthouse.pooling_factor, p.lighthouse.topk,
            p.lighthouse.scorer) == (3, 4, 1536, "norm")
    assert 115e6 < PRESETS["small"].num_parameters() < 135e6
    assert 260e6 < p.num_parameters() < 275e6  # what the name says
    demo = PRESETS["demo"]
    assert demo.lighthouse.min_seq_len <= 2048 and demo.lighthouse_layer_indices
    for cfg in PRESETS.values():
        with torch.device("meta"):
            model = Llama(cfg)
        assert sum(p.numel() for p in model.parameters()) == cfg.num_parameters()


def test_preset_model_config_applies_changes():
    lighthouse = LighthouseConfig(topk=256, scorer="dilated")
    cfg = preset_model_config("small", lighthouse=lighthouse, dense_layers=(), n_layers=6,
                              tie_embeddings=True)
    assert cfg.n_layers == 6 and cfg.d_model == 768 and cfg.tie_embeddings
    assert cfg.dense_layers == () and cfg.lighthouse is lighthouse
    assert preset_model_config("small").dense_layers == PRESETS["small"].dense_layers
    with pytest.raises(ValueError, match="unknown architecture settings"):
        preset_model_config("small", n_layer=6)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_model_config("tiny")


@pytest.mark.parametrize("checkpointing", [False, True])
def test_compiled_blocks_match_eager_loss_and_gradients(checkpointing):
    """Each block compiled as the trainer does (here with aot_eager, fullgraph): the eager loss
    and gradients, with and without activation checkpointing."""
    from lighthouse_attn.train.parallelize import apply_activation_checkpointing

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Llama(TINY)
    x = tokens()
    runs = []
    for compiled in (False, True):
        if compiled:
            if checkpointing:
                apply_activation_checkpointing(model)
            for block in model.layers:
                block.compile(backend="aot_eager", fullgraph=True)
        model.zero_grad()
        loss = model(x).logsumexp(-1).mean()
        loss.backward()
        runs.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_e, grads_e), (loss_c, grads_c) = runs
    torch.testing.assert_close(loss_c, loss_e)
    for a, b in zip(grads_e, grads_c):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
