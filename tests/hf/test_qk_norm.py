"""Models with QK-norm (Qwen3, OLMo 2, Gemma 3): the norm scorer nearly ties every score at
initialisation, so configure() and --hf-config training default to the dilated scorer."""

import dataclasses
import json
import warnings

import pytest
import torch

pytest.importorskip("transformers")

from tiny_models import LH, N, tiny_config, tiny_model, tokens  # noqa: E402

import lighthouse_attn.hf as lh_hf  # noqa: E402
from lighthouse_attn import LighthouseConfig, select  # noqa: E402
from lighthouse_attn.hf import attention as hf_attention  # noqa: E402
from lighthouse_attn.hf.model import QKNormWarning  # noqa: E402
from lighthouse_attn.hf.qk_norm import config_uses_qk_norm, uses_qk_norm  # noqa: E402
from lighthouse_attn.ops.reference.scores import base_scores  # noqa: E402


def _record(model, monkeypatch, n=N):
    calls = []
    real = hf_attention.lighthouse_attention

    def spy(q, k, v, config, *, scale=None, **kw):
        calls.append((q.detach(), k.detach(), v.detach(), config))
        return real(q, k, v, config, scale=scale, **kw)

    monkeypatch.setattr(hf_attention, "lighthouse_attention", spy)
    with torch.no_grad():
        model(tokens(batch=1, n=n))
    return calls


def test_qwen3_is_detected_and_llama_is_not():
    assert uses_qk_norm(tiny_model("qwen3")) and config_uses_qk_norm(tiny_config("qwen3"))
    assert not uses_qk_norm(tiny_model("llama"))
    assert not config_uses_qk_norm(tiny_config("llama"))


def test_a_qwen3_model_at_init_ties_every_norm_score(monkeypatch):
    with pytest.warns(QKNormWarning, match="nearly ties every score"):
        model = lh_hf.configure(tiny_model("qwen3"), LH, dense_layers=[0],
                                keep_norm_scorer=True)
    q, k, v, config = _record(model, monkeypatch)[0]
    assert config.scorer == "norm"
    sq, sk = base_scores(q, k, v, config)
    for s in (sq, sk):  # every norm is sqrt(head_dim), up to RMSNorm's epsilon
        assert torch.allclose(s, torch.full_like(s, 8 ** 0.5), rtol=1e-3)
    # a Llama of the same shape has no such ties
    llama = lh_hf.configure(tiny_model("llama"), LH, dense_layers=[0])
    q, k, v, config = _record(llama, monkeypatch)[-1]
    sq, _ = base_scores(q, k, v, config)
    assert (sq.max() - sq.min()) / sq.mean() > 0.1


def test_the_default_for_qk_norm_is_the_dilated_scorer_and_it_is_not_degenerate(monkeypatch):
    budget = LighthouseConfig(num_levels=2, pooling_factor=2, topk=128)  # 128 of 512 windows
    with pytest.warns(QKNormWarning, match="scoring with scorer='dilated' instead"):
        model = lh_hf.configure(tiny_model("qwen3"), budget, dense_layers=[0])
    q, k, v, config = _record(model, monkeypatch, n=1024)[0]
    assert config == dataclasses.replace(budget, scorer="dilated")
    sq, sk = base_scores(q, k, v, config)
    assert (sq.max() - sq.min()) / sq.mean() > 1e-2  # the scores depend on the content
    chosen = select(q, k, config, v=v)
    tied = select(q, k, dataclasses.replace(config, scorer="norm"), v=v)
    assert not torch.equal(chosen.index, tied.index)  # not the tie-break order
    heads = {tuple(chosen.index[0, h].tolist()) for h in range(chosen.index.shape[1])}
    assert len(heads) > 1  # heads choose differently
    # a model without QK-norm is left alone, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        llama = lh_hf.configure(tiny_model("llama"), LH)
    assert _record(llama, monkeypatch)[0][3] == LH


def test_hf_config_training_picks_the_dilated_scorer_for_qwen3(tmp_path, capsys):
    from lighthouse_attn.cli import main

    path = tmp_path / "config.json"
    path.write_text(json.dumps(tiny_config("qwen3", vocab_size=257).to_dict()))
    corpus = tmp_path / "c.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 400)
    args = ["train", "--hf-config", str(path), "--data", str(corpus), "--seq-len", "256",
            "--num-levels", "2", "--pooling-factor", "2", "--topk", "128",
            "--lighthouse-steps", "2", "--dense-steps", "1", "--warmup-steps", "1",
            "--batch-size", "1", "--threads", "1", "--no-progress", "--dry-run",
            "--run-dir", str(tmp_path / "r")]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "note: the model normalises q and k per head (QK-norm)" in captured.err
    assert "dilated" in captured.out
    assert main(args + ["--scorer", "norm"]) == 0
    assert "nearly ties every score" in capsys.readouterr().err


def test_eval_recall_of_an_hf_config_run(tmp_path, capsys):
    """`eval recall` reads an --hf-config run's attention inputs (after QK-norm) too."""
    from lighthouse_attn.cli import main

    path = tmp_path / "config.json"
    path.write_text(json.dumps(tiny_config("qwen3", vocab_size=257).to_dict()))
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"def f_{i}(x):\n    return x * {i % 7} + {i % 5}\n"
                              for i in range(400)))
    run = tmp_path / "r"
    assert main(["train", "--hf-config", str(path), "--data", str(corpus), "--seq-len", "1024",
                 "--num-levels", "2", "--pooling-factor", "2", "--topk", "128",
                 "--dense-layers", "0", "--lighthouse-steps", "2", "--dense-steps", "1",
                 "--warmup-steps", "1", "--batch-size", "1", "--threads", "1",
                 "--no-progress", "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", "recall", "--checkpoint", str(run), "--data", str(corpus),
                 "--sequences", "1", "--topks", "128", "--out", str(tmp_path / "out"),
                 "--device", "cpu", "--no-progress"]) == 0
    result = json.loads(next((tmp_path / "out").glob("recall_*.json")).read_text())
    assert result["lighthouse"]["scorer"] == "dilated"
    assert [r["layer"] for r in result["layers"]] == [1, 2, 3]
    for row in result["layers"]:
        assert 0 < row["selection"]["exact"] < 1
        assert row["oracle"]["exact"] >= row["selection"]["exact"] - 1e-9


def test_a_qwen3_model_trains_under_bf16_autocast():
    """Qwen3's q_norm/k_norm return fp32 under autocast while v is bf16: the Lighthouse layers
    take them as SDPA does, and the loss and gradients are finite."""
    model = lh_hf.configure(tiny_model("qwen3"), LH, dense_layers=[0])
    x = tokens(batch=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, labels=x).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
