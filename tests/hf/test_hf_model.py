"""Checkpoints and construction: save/load as plain HF checkpoints, build_causal_lm."""

import json

import pytest
import torch

pytest.importorskip("transformers")

from tiny_models import LH, tiny_config, tiny_model, tokens
from transformers import AutoModelForCausalLM

import lighthouse_attn.hf as lh_hf
from lighthouse_attn import LighthouseConfig


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_save_then_load_as_sdpa_has_exactly_the_dense_keys(arch, tmp_path):
    model = lh_hf.configure(tiny_model(arch), LH, dense_layers=[0, -1])
    x = tokens()
    with torch.no_grad():
        stage1 = model(x).logits
    lh_hf.save_pretrained(model, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved[lh_hf.CONFIG_KEY] == {"lighthouse": LH.to_dict(), "dense_layers": [0, 3],
                                       "fallback": "error"}

    loaded, info = AutoModelForCausalLM.from_pretrained(
        tmp_path / "ckpt", attn_implementation="sdpa", output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    dense = tiny_model(arch)
    assert loaded.state_dict().keys() == dense.state_dict().keys() == model.state_dict().keys()
    assert loaded.config._attn_implementation == "sdpa" and lh_hf.lighthouse_layers(loaded) == []
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x).logits, lh_hf.to_dense(model).eval()(x).logits)

    # The same checkpoint resumes stage 1 with its stored settings.
    lh_hf.register()
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt",
                                                 attn_implementation="lighthouse")
    assert lh_hf.lighthouse_layers(again) == [1, 2]
    with torch.no_grad():
        assert torch.equal(again.train()(x).logits, stage1)


def test_save_pretrained_replaces_an_existing_checkpoint(tmp_path):
    a, b = tiny_model(seed=1), tiny_model(seed=2)
    lh_hf.save_pretrained(a, tmp_path / "ckpt")
    lh_hf.save_pretrained(b, tmp_path / "ckpt")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    for p, q in zip(loaded.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary left behind


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_build_causal_lm_from_a_local_config(arch, tmp_path):
    tiny_config(arch).save_pretrained(tmp_path)
    torch.manual_seed(0)
    model = lh_hf.build_causal_lm(str(tmp_path / "config.json"), LH, [0, -1])
    assert type(model).__name__ == type(tiny_model(arch)).__name__
    assert model.config._attn_implementation == "lighthouse"
    assert lh_hf.lighthouse_layers(model) == [1, 2]
    x = tokens()
    model(x, labels=x).loss.backward()
    torch.manual_seed(0)
    dense = lh_hf.build_causal_lm(str(tmp_path), LH, [0], attention="sdpa")  # a directory works
    assert dense.config._attn_implementation == "sdpa"
    assert getattr(dense.config, lh_hf.CONFIG_KEY, None) is None
    for p, q in zip(model.parameters(), dense.parameters()):
        assert torch.equal(p, q)  # same seed, same random init
    lh_hf.to_dense(model)
    with torch.no_grad():
        assert torch.equal(model(x).logits, dense(x).logits)


def test_build_causal_lm_errors(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        lh_hf.build_causal_lm(str(tmp_path / "missing.json"), LH, [])
    (tmp_path / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(ValueError, match="cannot read"):
        lh_hf.build_causal_lm(str(tmp_path), LH, [])
    tiny_config().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="attention must be one of"):
        lh_hf.build_causal_lm(str(tmp_path), LH, [], attention="flash")
    with pytest.raises(ValueError, match="out of range"):
        lh_hf.build_causal_lm(str(tmp_path), LighthouseConfig(), [9])
