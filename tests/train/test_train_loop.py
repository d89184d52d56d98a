"""The two-stage loop end to end on tiny runs: outputs, switch, resume, failures."""

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import TINY_MODEL, losses, make_corpus, metrics, tiny_run

from lighthouse_attn import LighthouseConfig
from lighthouse_attn.models import Llama
from lighthouse_attn.train import TrainConfig, TrainingError, load_model, train
from lighthouse_attn.train.checkpoint import list_checkpoints


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, corpus):
    """A finished run: 3 Lighthouse + 3 dense steps, checkpoints every 2, keep 1."""
    run = tiny_run(tmp_path_factory.mktemp("runs"), "done", corpus, keep_ckpts=1)
    result = train(run, TINY_MODEL, progress=False)
    return run, result


def test_run_directory_contents(finished):
    _, result = finished
    d = result.run_dir
    assert result.status == "finished" and result.step == 6
    assert result.final_dir == os.path.join(d, "final")
    for name in ("config.json", "metrics.jsonl", "loss.png", "summary.md", "train.log",
                 "final/model.safetensors", "final/config.json"):
        assert os.path.isfile(os.path.join(d, name)), name
    config = json.loads(Path(d, "config.json").read_text())
    assert config["model"] == TINY_MODEL.to_dict() and config["train"]["lighthouse_steps"] == 3
    records = metrics(d)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["stage"] for r in records] == ["lighthouse"] * 3 + ["dense"] * 3
    for r in records:
        assert set(r) >= {"step", "stage", "loss", "lr", "grad_norm", "tokens_per_s",
                          "elapsed_s", "tokens"}
        assert r["tokens"] == r["step"] * 2 * 512
    assert records[-1]["loss"] < records[0]["loss"]
    # keep 1 newest (step 6) plus the end of stage 1 (step 3); 2 and 4 pruned
    assert [s for s, _ in list_checkpoints(d)] == [3, 6]
    log = Path(d, "train.log").read_text()
    assert "step 3: switch to dense SDPA in every layer" in log
    summary = Path(d, "summary.md").read_text()
    assert "| 1: Lighthouse | 3 |" in summary and "| 2: dense | 3 |" in summary
    assert "Switch to dense after step 3" in summary


def test_load_model_contract(finished, tmp_path):
    _, result = finished
    model, info = load_model(result.run_dir)
    assert info["kind"] == "final" and info["step"] == 6 and info["attention"] == "dense"
    assert model.attention_mode == "dense" and not model.training
    assert info["model_config"] == TINY_MODEL.to_dict() and info["tokenizer"]["sep_id"] == 256
    saved = load_file(os.path.join(result.final_dir, "model.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k])
    # a stage-1 checkpoint loads into the dense model with the same keys
    ckpt = os.path.join(result.run_dir, "checkpoints", "step_0000003")
    stage1, info = load_model(ckpt, attention="lighthouse")
    assert info["kind"] == "checkpoint" and info["trained_attention"] == "lighthouse"
    assert stage1.attention_mode == "lighthouse"
    assert list(stage1.state_dict()) == list(Llama(TINY_MODEL).state_dict())
    with pytest.raises(ValueError, match="not a directory"):
        load_model(tmp_path / "nope")
    with pytest.raises(ValueError, match="holds no model"):
        load_model(tmp_path)


def test_load_model_falls_back_to_latest_checkpoint_and_rejects_damage(finished, tmp_path):
    _, result = finished
    run_dir = tmp_path / "copy"
    shutil.copytree(result.run_dir, run_dir)
    shutil.rmtree(run_dir / "final")
    _, info = load_model(run_dir)
    assert info["kind"] == "checkpoint" and info["step"] == 6
    weights = run_dir / "checkpoints" / "step_0000006" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt: model.safetensors does not match"):
        load_model(run_dir)
    # a checkpoint whose config no longer matches its weights (manifest rewritten to match)
    ckpt = run_dir / "checkpoints" / "step_0000003"
    meta = json.loads((ckpt / "config.json").read_text())
    meta["model"]["ffn_hidden"] = 64
    (ckpt / "config.json").write_text(json.dumps(meta))
    (ckpt / "manifest.json").unlink()
    with pytest.raises(ValueError, match="no manifest"):
        load_model(ckpt)


def test_switch_keeps_optimizer_schedule_and_data(tmp_path, corpus):
    """With L = 1 Lighthouse is exactly dense (SPEC), so a two-stage run must reproduce a
    dense-from-scratch run: any reset at the switch (optimizer, schedule, data) would show."""
    model = TINY_MODEL.replace(lighthouse=LighthouseConfig(num_levels=1, pooling_factor=4,
                                                           topk=128))
    train(tiny_run(tmp_path, "two", corpus), model, progress=False)
    train(tiny_run(tmp_path, "dense", corpus, lighthouse_steps=0, dense_steps=6), model,
          progress=False)
    assert [r["stage"] for r in metrics(tmp_path / "dense")] == ["dense"] * 6
    two, dense = losses(tmp_path / "two"), losses(tmp_path / "dense")
    assert two == pytest.approx(dense, rel=1e-5, abs=1e-6)


def test_gradient_accumulation_matches_one_big_batch(tmp_path, corpus):
    train(tiny_run(tmp_path, "a1", corpus, batch_size=4, dense_steps=0), TINY_MODEL,
          progress=False)
    train(tiny_run(tmp_path, "a2", corpus, batch_size=4, grad_accum=2, dense_steps=0),
          TINY_MODEL, progress=False)
    assert losses(tmp_path / "a2") == pytest.approx(losses(tmp_path / "a1"), rel=1e-5)


def test_interrupted_and_resumed_run_matches_uninterrupted(finished, tmp_path, corpus):
    _, done = finished
    interrupted_run = tiny_run(tmp_path, "cut", corpus, keep_ckpts=1)

    def interrupt(record):
        if record["step"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    result = train(interrupted_run, TINY_MODEL, progress=False, on_step=interrupt)
    assert result.status == "interrupted" and result.step == 1
    assert result.interrupted_by == "SIGINT" and result.final_dir is None
    assert [s for s, _ in list_checkpoints(interrupted_run.run_dir)] == [1]
    assert "SIGINT at step 1" in Path(interrupted_run.run_dir, "train.log").read_text()
    result = train(interrupted_run, TINY_MODEL, resume=True, progress=False)
    assert result.status == "finished" and result.step == 6
    assert [r["step"] for r in metrics(interrupted_run.run_dir)] == [1, 2, 3, 4, 5, 6]
    assert losses(interrupted_run.run_dir) == pytest.approx(losses(done.run_dir), rel=1e-6)
    a = load_file(os.path.join(done.final_dir, "model.safetensors"))
    b = load_file(os.path.join(result.final_dir, "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)


def test_crash_after_checkpoint_rewrites_later_metrics(finished, tmp_path):
    """A run that died after logging steps past its last checkpoint resumes from the
    checkpoint and logs each step once, with the same losses."""
    _, done = finished
    crashed = tmp_path / "crashed"
    shutil.copytree(done.run_dir, crashed)
    shutil.rmtree(crashed / "final")
    shutil.rmtree(crashed / "checkpoints" / "step_0000006")  # newest left: step 3
    config = json.loads((crashed / "config.json").read_text())
    config["train"]["run_dir"] = str(crashed)
    (crashed / "config.json").write_text(json.dumps(config))
    run = TrainConfig.from_dict(config["train"])
    result = train(run, TINY_MODEL, resume=True, progress=False)
    assert result.step == 6
    assert [r["step"] for r in metrics(crashed)] == [1, 2, 3, 4, 5, 6]
    assert losses(crashed) == pytest.approx(losses(done.run_dir), rel=1e-6)


def test_resume_rejects_a_corrupt_or_mismatched_checkpoint(finished, tmp_path):
    _, done = finished
    bad = tmp_path / "bad"
    shutil.copytree(done.run_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    run = TrainConfig.from_dict(dict(config["train"], run_dir=str(bad)))
    optimizer = bad / "checkpoints" / "step_0000006" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt: optimizer.pt.*remove .* to resume from "
                                         "step_0000003"):
        train(run, TINY_MODEL, resume=True, progress=False)
    shutil.rmtree(bad / "checkpoints" / "step_0000006")
    with pytest.raises(ValueError, match="saved for another model config.*ffn_hidden"):
        train(run, TINY_MODEL.replace(ffn_hidden=64), resume=True, progress=False)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus,
                                                                  monkeypatch):
    calls = {"n": 0}
    real_forward = Llama.forward

    def forward(self, input_ids):
        calls["n"] += 1
        logits = real_forward(self, input_ids)
        return logits * float("nan") if calls["n"] == 4 else logits

    monkeypatch.setattr(Llama, "forward", forward)
    run = tiny_run(tmp_path, "nan", corpus, lighthouse_steps=5)
    with pytest.raises(TrainingError, match=r"non-finite loss nan .* at step 4 \(lighthouse "
                                            r"stage\).*step_0000002"):
        train(run, TINY_MODEL, progress=False)
    assert [s for s, _ in list_checkpoints(run.run_dir)] == [2]
    assert [r["step"] for r in metrics(run.run_dir)] == [1, 2, 3]
    model, info = load_model(run.run_dir)
    assert info["step"] == 2 and all(torch.isfinite(p).all() for p in model.parameters())


def test_staggered_switch_trains_layer_by_layer_and_resumes_exactly(finished, tmp_path,
                                                                   corpus):
    """``switch_ramp=2`` over 3 stage-1 steps: Lighthouse layer 1 turns dense at step 2 and
    layer 2 at step 3 (1-based), so the first step equals the plain run's and the second does
    not; an interrupted and resumed ramp run equals an uninterrupted one."""
    _, done = finished
    ramp = tiny_run(tmp_path, "ramp", corpus, switch_ramp=2)
    train(ramp, TINY_MODEL, progress=False)
    plain, staggered = losses(done.run_dir), losses(ramp.run_dir)
    assert staggered[0] == pytest.approx(plain[0], rel=1e-6)
    assert staggered[1] != pytest.approx(plain[1], rel=1e-4)
    log = Path(ramp.run_dir, "train.log").read_text()
    assert "step 1: 1 of 2 Lighthouse layers now run dense" in log
    assert "step 2: 2 of 2 Lighthouse layers now run dense" in log

    cut = tiny_run(tmp_path, "ramp_cut", corpus, switch_ramp=2)

    def interrupt(record):
        if record["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    assert train(cut, TINY_MODEL, progress=False, on_step=interrupt).step == 2
    train(cut, TINY_MODEL, resume=True, progress=False)
    assert losses(cut.run_dir) == pytest.approx(staggered, rel=1e-6)


def test_staggered_switch_is_checked():
    with pytest.raises(ValueError, match=r"switch_ramp must be in 0..lighthouse_steps \(3; "
                                         r"got 4\)"):
        TrainConfig(run_dir="r", data=["x"], lighthouse_steps=3, switch_ramp=4).validate()
