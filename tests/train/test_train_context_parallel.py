"""The trainer with --context-parallel on the CPU (torchrun, gloo): every sequence split over
processes gives the losses of one process, with data parallelism too, and a run resumes under
another degree."""

import os
import shutil
import subprocess
import sys

import pytest
from train_helpers import losses, make_corpus, metrics

from lighthouse_attn.cli import main

# the demo model with a budget that splits into 2 x 2 chunks: L=2, p=2, K=512 at 2,048 tokens
ARGS = ["--preset", "demo", "--num-levels", "2", "--pooling-factor", "2", "--topk", "512",
        "--seq-len", "2048", "--lighthouse-steps", "3", "--dense-steps", "2",
        "--warmup-steps", "2", "--ckpt-every", "1", "--threads", "1", "--no-progress"]


def torchrun(n: int, args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", str(n), "-m", "lighthouse_attn", "train", *args],
                          capture_output=True, text=True, timeout=600, env=env)
    # on failure: the end of the output, and every line of the first failing rank's own
    # traceback (torchrun interleaves the ranks' outputs)
    ranks = "\n".join(line for line in proc.stderr.splitlines() if line.startswith("[rank"))
    assert proc.returncode == 0, proc.stdout[-2000:] + ranks[-6000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    d = tmp_path_factory.mktemp("cp")
    corpus = make_corpus(d, 60_000)
    assert main(["train", *ARGS, "--data", corpus, "--batch-size", "2",
                 "--run-dir", str(d / "one")]) == 0
    return d, corpus


def test_context_parallel_2_matches_one_process(one):
    d, corpus = one
    proc = torchrun(2, [*ARGS, "--data", corpus, "--batch-size", "2", "--context-parallel",
                        "2", "--run-dir", str(d / "cp2")])
    assert "2 processes: 1 data-parallel x 2 context-parallel" in proc.stdout
    assert [r["stage"] for r in metrics(d / "cp2")] == ["lighthouse"] * 3 + ["dense"] * 2
    assert losses(d / "cp2") == pytest.approx(losses(d / "one"), rel=1e-5)

    # resume under another degree: one process continues what two started
    for step in (4, 5):
        shutil.rmtree(d / "cp2" / "checkpoints" / f"step_{step:07d}", ignore_errors=True)
    shutil.rmtree(d / "cp2" / "final")
    assert main(["train", "--resume", str(d / "cp2"), "--context-parallel", "1",
                 "--no-progress"]) == 0
    assert [r["step"] for r in metrics(d / "cp2")] == [1, 2, 3, 4, 5]
    assert losses(d / "cp2") == pytest.approx(losses(d / "one"), rel=1e-5)


def test_data_and_context_parallel_2x2_matches_one_process(one):
    d, corpus = one
    proc = torchrun(4, [*ARGS, "--data", corpus, "--batch-size", "2", "--context-parallel",
                        "2", "--run-dir", str(d / "cp2x2")])
    assert "4 processes: 2 data-parallel x 2 context-parallel" in proc.stdout
    assert losses(d / "cp2x2") == pytest.approx(losses(d / "one"), rel=1e-5)


@pytest.mark.parametrize("extra,match", [
    (["--topk", "256"], "try topk=512"),
    (["--context-parallel", "0"], "--context-parallel must be an integer >= 1"),
])
def test_inexact_or_bad_degrees_are_refused_before_any_work(one, tmp_path, capsys, extra,
                                                            match):
    _, corpus = one
    args = [*ARGS, "--data", corpus, "--context-parallel", "2", *extra,
            "--run-dir", str(tmp_path / "x"), "--dry-run"]
    assert main(["train", *args]) == 2
    assert match in capsys.readouterr().err


def test_degree_must_divide_the_processes(one, tmp_path, capsys):
    _, corpus = one
    assert main(["train", *ARGS, "--data", corpus, "--context-parallel", "2",
                 "--run-dir", str(tmp_path / "y")]) == 2
    assert "--context-parallel 2 must divide the 1 process" in capsys.readouterr().err


def test_compiled_context_parallel_matches_one_process(one):
    """--compile around the sharded layers, whose collectives run between compiled graphs."""
    d, corpus = one
    torchrun(2, [*ARGS, "--data", corpus, "--batch-size", "2", "--context-parallel", "2",
                 "--compile", "--run-dir", str(d / "cp2c")])
    assert losses(d / "cp2c") == pytest.approx(losses(d / "one"), rel=1e-4)
