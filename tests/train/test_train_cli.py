"""`lighthouse-attn train`: the main job's plan, clear errors, SIGTERM, NaN exit code."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import TINY_ARGS, make_corpus

from lighthouse_attn.cli import main
from lighthouse_attn.data import TOKENIZER
from lighthouse_attn.models import PRESETS, Llama
from lighthouse_attn.train import PRESET_TRAINING, TrainConfig
from lighthouse_attn.train.checkpoint import list_checkpoints
from lighthouse_attn.train.options import validate_model_for_run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_training_defaults_fit_their_lighthouse_settings(preset):
    run = TrainConfig(run_dir="", **PRESET_TRAINING[preset])
    run.validate()
    validate_model_for_run(PRESETS[preset], run, TOKENIZER)


def test_main_job_defaults_run_the_demo_with_lighthouse_active(capsys):
    assert main(["train", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "preset demo" in out
    assert ("stage 1: 150 steps, Lighthouse L=3 p=4 K=128 norm, paper selection, in 4/6 "
            "layers") in out
    assert "gathered length 1,152 of 2,048" in out
    assert "stage 2: 50 steps, dense SDPA in every layer" in out
    assert "embedded stdlib corpus" in out
    sequences = int(re.search(r"([\d,]+) sequences", out).group(1).replace(",", ""))
    batch = int(re.search(r"batch: (\d+) x", out).group(1))
    assert f"reads {200 * batch / sequences:.2f} epochs" in out


@pytest.mark.parametrize("extra,match", [
    (["--seq-len", "500"], "--seq-len 500 does not fit the Lighthouse settings.*Nearest valid"),
    (["--batch-size", "3", "--grad-accum", "2"], "multiple of --grad-accum"),
    (["--data", "MISSING.txt"], "does not exist"),
    (["--batch-size", "4096", "--seq-len", "65536"], "estimated memory .* exceeds"),
    (["--lighthouse-steps", "-1"], "--lighthouse-steps must be >= 0"),
    (["--topk", "100"], "multiple of 128"),
    (["--dense-layers", "7"], "out of range"),
])
def test_invalid_settings_are_one_line_errors(extra, match, capsys, corpus, tmp_path):
    args = ["train", *TINY_ARGS, "--data", corpus, "--run-dir", str(tmp_path / "r"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("lighthouse-attn train: error:") and err.count("\n") == 1
    assert re.search(match, err), err
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_data_shorter_than_one_sequence(capsys, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("x" * 300)
    assert main(["train", *TINY_ARGS, "--data", str(short), "--run-dir",
                 str(tmp_path / "r")]) == 2
    assert ("shorter than one sequence of --seq-len + 1 = 513; add data or use --seq-len <= 300"
            in capsys.readouterr().err)


def test_existing_run_dir_and_resume_flags(capsys, corpus, tmp_path):
    run_dir = str(tmp_path / "r")
    args = ["train", *TINY_ARGS, "--data", corpus, "--run-dir", run_dir,
            "--lighthouse-steps", "2", "--dense-steps", "1"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds a run; continue it with --resume" in capsys.readouterr().err
    assert main(["train", "--resume", run_dir, "--lr", "0.1"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--dense-steps", "2"]) == 0
    assert len(Path(run_dir, "metrics.jsonl").read_text().splitlines()) == 4


def test_non_finite_loss_exits_with_code_1(capsys, corpus, tmp_path, monkeypatch):
    real = Llama.forward
    monkeypatch.setattr(Llama, "forward", lambda self, ids: real(self, ids) * float("inf"))
    assert main(["train", *TINY_ARGS, "--data", corpus, "--run-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "at step 1" in err and "no checkpoint" in err


def test_non_finite_gradient_norm_is_named_as_such(capsys, corpus, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, clip: torch.tensor(float("nan")))
    assert main(["train", *TINY_ARGS, "--data", corpus, "--run-dir", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err
    assert "non-finite gradient norm nan (loss " in err and "Lower lr or raise warmup_steps" in err


def test_sigterm_writes_a_checkpoint_then_exits(corpus, tmp_path):
    run_dir = tmp_path / "term"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lighthouse_attn", "train", *TINY_ARGS, "--data", corpus,
         "--run-dir", str(run_dir), "--lighthouse-steps", "400", "--dense-steps", "0",
         "--ckpt-every", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert 2 <= steps[-1] < 400
    assert [s for s, _ in list_checkpoints(run_dir)] == [steps[-1]]
    assert f"SIGTERM at step {steps[-1]}" in out and "--resume" in out
    assert os.path.isfile(run_dir / "summary.md") and not (run_dir / "final").exists()
