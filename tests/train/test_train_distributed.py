"""FSDP2 data parallelism on the CPU: torchrun, 2 processes, gloo.

Two processes with the same global batch must give the same losses and final weights as one
process: each rank takes its half of every global batch, FSDP2 (fully_shard) shards the weights,
gradients and AdamW state and averages the gradients, and checkpoints are gathered to full
tensors on rank 0 and loaded back into the sharded model on resume.
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import TINY_ARGS, losses, make_corpus, metrics

from lighthouse_attn.cli import main


def test_two_processes_match_one(tmp_path):
    """2 processes x 2 micro-steps of 1 sequence with activation checkpointing == 1 process with
    one batch of 4."""
    corpus = make_corpus(tmp_path)
    common = [*TINY_ARGS, "--data", corpus, "--batch-size", "4", "--lighthouse-steps", "3",
              "--dense-steps", "2", "--ckpt-every", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "lighthouse_attn", "train", *common, "--run-dir", str(tmp_path / "two"),
         "--grad-accum", "2", "--activation-checkpointing"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(grad-accum 2, 2 processes)" in proc.stdout
    assert main(["train", *common, "--run-dir", str(tmp_path / "one")]) == 0

    assert [r["stage"] for r in metrics(tmp_path / "two")] == ["lighthouse"] * 3 + ["dense"] * 2
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)
    one = load_file(tmp_path / "one" / "final" / "model.safetensors")
    two = load_file(tmp_path / "two" / "final" / "model.safetensors")
    assert one.keys() == two.keys()
    for k in one:
        # AdamW magnifies float noise in near-zero gradients: allow 1e-4 (lr is 3e-3)
        torch.testing.assert_close(two[k], one[k], rtol=1e-3, atol=1e-4)
    # checkpoints of the sharded run hold full tensors
    ckpt = load_file(tmp_path / "two" / "checkpoints" / "step_0000004" / "model.safetensors")
    assert all(ckpt[k].shape == one[k].shape for k in one)

    # resuming under torchrun loads them back into the sharded model and optimizer: drop the
    # newest checkpoint (step 4) so the run continues from step 3 and redoes steps 4-5
    shutil.rmtree(tmp_path / "two" / "checkpoints" / "step_0000004")
    shutil.rmtree(tmp_path / "two" / "final")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "lighthouse_attn", "train", "--resume", str(tmp_path / "two"), "--no-progress"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "at step 3/5 from step_0000003" in proc.stdout
    assert [r["step"] for r in metrics(tmp_path / "two")] == [1, 2, 3, 4, 5]
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)

    # and one process can continue what two started
    shutil.rmtree(tmp_path / "two" / "checkpoints" / "step_0000004")
    shutil.rmtree(tmp_path / "two" / "final")
    assert main(["train", "--resume", str(tmp_path / "two"), "--no-progress"]) == 0
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)
