"""GPU-only: the trainer and the training benchmark with bf16 autocast on CUDA."""

import json

import pytest
from train_helpers import TINY_MODEL, make_corpus, metrics, tiny_run

from lighthouse_attn.cli import main
from lighthouse_attn.train import load_model, train

pytestmark = pytest.mark.gpu


def test_tiny_run_on_cuda_in_bf16(tmp_path):
    run = tiny_run(tmp_path, "gpu", make_corpus(tmp_path), device="cuda",
                   activation_checkpointing=True)
    result = train(run, TINY_MODEL, progress=False)
    assert result.status == "finished"
    records = metrics(result.run_dir)
    assert [r["stage"] for r in records] == ["lighthouse"] * 3 + ["dense"] * 3
    assert records[-1]["loss"] < records[0]["loss"]
    model, _ = load_model(result.run_dir)
    assert model.attention_mode == "dense"


def test_bench_train_on_cuda_reports_memory(tmp_path):
    out = tmp_path / "r.json"
    assert main(["bench", "train", "--preset", "demo", "--n-layers", "3", "--seq-len", "2048",
                 "--steps", "2", "--warmup-steps", "1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["precision"] == "bf16 autocast" and r["cuda"]
    for mode in ("lighthouse", "dense"):
        assert r["results"][mode]["peak_memory_bytes"] > 0
