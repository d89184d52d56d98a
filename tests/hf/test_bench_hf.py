"""`lighthouse-attn bench hf` at tiny size on the CPU."""

import json

import pytest

pytest.importorskip("transformers")

from lighthouse_attn.cli import main

TINY = ["bench", "hf", "--hidden-size", "32", "--num-layers", "3", "--heads", "4",
        "--kv-heads", "2", "--intermediate-size", "64", "--seq-len", "256", "--num-levels", "2",
        "--pooling-factor", "2", "--topk", "128", "--dense-layers", "0", "--dtype", "fp32",
        "--device", "cpu", "--warmup-steps", "1", "--steps", "2"]


def test_bench_hf_tiny_run_writes_the_record(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.json"
    assert main(TINY + ["--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "lighthouse" in table and "sdpa" in table and "speedup" in table
    assert "Lighthouse in 2 of 3 layers" in table
    record = json.loads(out.read_text())
    assert record["benchmark"] == "hf" and record["device"].startswith("cpu")
    assert {"torch", "triton", "transformers"} <= set(record["versions"])
    config = record["config"]
    assert config["seq_len"] == 256 and config["checkpointing"] is True
    assert config["lighthouse"]["topk"] == 128 and config["lighthouse_layers"] == [1, 2]
    assert config["gathered_length"] == 128 + 256
    for variant in ("lighthouse", "sdpa"):
        r = record["results"][variant]
        assert len(r["step_times_s"]) == len(r["losses"]) == 3
        assert r["median_step_s"] > 0
        assert r["tokens_per_s"] == pytest.approx(256 / r["median_step_s"])
        assert r["peak_memory_bytes"] is None  # CPU
        assert r["timed_steps"] == 2 and r["stopped_by_time_budget"] is False
    lh, dense = record["results"]["lighthouse"], record["results"]["sdpa"]
    assert lh["losses"][0] != dense["losses"][0]  # same weights and batch, different attention
    assert record["speedup"] == pytest.approx(dense["median_step_s"] / lh["median_step_s"])


def test_bench_hf_time_budget_cuts_the_timed_steps(tmp_path):
    out = tmp_path / "bench.json"
    assert main(TINY + ["--variants", "sdpa", "--steps", "5", "--time-budget", "1e-9",
                        "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    r = record["results"]["sdpa"]
    assert r["timed_steps"] == 1 and r["stopped_by_time_budget"] is True
    assert len(r["step_times_s"]) == 2 and "speedup" not in record  # 1 warm-up + 1 timed


@pytest.mark.parametrize("extra,message", [
    (["--seq-len", "257"], "multiple of 2"),
    (["--dense-layers", "0,1,2"], "no Lighthouse layer"),
    (["--dense-layers", "7"], "out of range"),
    (["--variants", "flash"], "--variants"),
    (["--steps", "0"], "--steps"),
    (["--time-budget", "0"], "--time-budget"),
])
def test_bench_hf_rejects_bad_input(extra, message, tmp_path, capsys):
    assert main(TINY + extra + ["--out", str(tmp_path / "x.json")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
