"""`lighthouse-attn bench train` at a tiny size on the CPU."""

import json

from lighthouse_attn.cli import main

TINY = ["--preset", "demo", "--d-model", "32", "--n-layers", "3", "--n-heads", "4",
        "--n-kv-heads", "2", "--ffn-hidden", "48", "--dense-layers", "0", "--num-levels", "2",
        "--topk", "128", "--seq-len", "512", "--batch-size", "2", "--steps", "2",
        "--warmup-steps", "1"]


def test_bench_train_times_both_modes_and_writes_json(tmp_path, capsys):
    out = tmp_path / "result.json"
    assert main(["bench", "train", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lighthouse" in printed and "dense" in printed and "Lighthouse / dense tokens/s" \
        in printed
    r = json.loads(out.read_text())
    assert r["device"].startswith("cpu") and r["torch"] and "triton" in r
    assert r["model"]["n_layers"] == 3 and r["model"]["lighthouse"]["num_levels"] == 2
    assert r["seq_len"] == 512 and r["activation_checkpointing"] is True
    assert r["lighthouse_layers"] == [1, 2] and r["gathered_length"] == 640
    for mode in ("lighthouse", "dense"):
        m = r["results"][mode]
        assert len(m["step_times_s"]) == 2 and len(m["losses"]) == 2
        assert abs(m["tokens_per_s"] - 2 * 512 / m["median_step_s"]) < 1e-6 * m["tokens_per_s"]
        assert m["peak_memory_bytes"] is None  # CPU
    assert abs(r["speedup"] - r["results"]["lighthouse"]["tokens_per_s"]
               / r["results"]["dense"]["tokens_per_s"]) < 1e-9


def test_bench_train_out_directory_and_bad_settings(tmp_path, capsys):
    assert main(["bench", "train", *TINY, "--modes", "dense", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("train_custom-3x32_512_cpu*.json")
    r = json.loads(path.read_text())
    assert list(r["results"]) == ["dense"] and r["speedup"] is None
    assert main(["bench", "train", *TINY, "--seq-len", "500", "--out", str(tmp_path)]) == 2
    assert "does not fit the Lighthouse settings" in capsys.readouterr().err
    assert main(["bench", "train", *TINY, "--modes", "sparse", "--out", str(tmp_path)]) == 2
