"""`lighthouse-attn eval niah|loss` and `inspect` on a tiny trained run: files, and errors."""

import json
import re
import shutil

import pytest
import torch
from eval_helpers import EVAL_MODEL, TRAINED_SEQ_LEN, shared_corpus, shared_run

from lighthouse_attn.cli import main
from lighthouse_attn.models import Llama
from lighthouse_attn.models.loading import sha256_file as _sha256
from lighthouse_attn.train.checkpoint import save_final_model

COMMON = ["--no-progress", "--threads", "1", "--device", "cpu"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return shared_corpus(tmp_path_factory)


@pytest.fixture(autouse=True)
def keep_threads():
    """The commands set torch's CPU threads (--threads 1): restore them for other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def read(path):
    return json.loads(path.read_text())


def test_commands_are_registered(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "eval" in out and "inspect" in out
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "niah" in out and "loss" in out
    for command in (["eval", "niah"], ["eval", "loss"], ["inspect"]):
        with pytest.raises(SystemExit) as exc:
            main(command + ["--help"])
        assert exc.value.code == 0
        assert "--checkpoint" in capsys.readouterr().out


def test_niah_defaults_fall_back_to_the_training_length(tiny_run, tmp_path, capsys):
    out_dir = tmp_path / "out"
    args = ["eval", "niah", "--checkpoint", str(tiny_run), "--trials", "2", "--out",
            str(out_dir)] + COMMON
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "every default context is longer than --max-context 512" in out
    assert "skipped context 98,304: longer than max_context 512" in out
    result = read(out_dir / "niah_tiny.json")
    assert result["contexts"] == [256, 512]
    assert result["depths"] == [0, 15, 30, 50, 70, 85, 100]
    assert len(result["accuracy"]) == 7 and all(len(row) == 2 for row in result["accuracy"])
    assert len(result["records"]) == 2 * 7 * 2
    assert [s["context"] for s in result["skipped"]] == [4096, 8192, 16384, 32768, 65536, 98304]
    assert result["checkpoint"]["trained_seq_len"] == TRAINED_SEQ_LEN
    assert result["checkpoint"]["step"] == 6 and result["attention"] == "dense"
    assert (out_dir / "niah_tiny.png").stat().st_size > 10_000
    # deterministic
    assert main(args) == 0
    assert read(out_dir / "niah_tiny.json")["records"] == result["records"]


def test_niah_lighthouse_reports_contexts_the_budget_cannot_take(tiny_run, tmp_path, capsys):
    ckpt = tiny_run / "checkpoints" / "step_0000004"  # end of stage 1
    assert main(["eval", "niah", "--checkpoint", str(ckpt), "--attention", "lighthouse",
                 "--contexts", "300,512,1K", "--depths", "0,100", "--trials", "1",
                 "--max-context", "1024", "--out", str(tmp_path)] + COMMON) == 0
    result = read(tmp_path / "niah_tiny-step_0000004.json")
    assert result["contexts"] == [512, 1024]
    assert result["skipped"][0]["context"] == 300
    assert result["skipped"][0]["kind"] == "lighthouse budget"
    assert "skipped context 300: Lighthouse cannot run it" in capsys.readouterr().out


@pytest.mark.parametrize("extra,match", [
    (["--contexts", "100"], "too short for the passkey prompt"),
    (["--contexts", "4x"], "comma-separated token counts"),
    (["--depths", "0,150"], "outside 0..100"),
    (["--memory-gib", "0.000001"], "no context length can be evaluated.*more than the"),
    (["--max-context", "50"], "--max-context must be >="),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_niah_bad_input_is_one_line_and_exit_2(tiny_run, tmp_path, capsys, extra, match):
    assert main(["eval", "niah", "--checkpoint", str(tiny_run), "--out", str(tmp_path)]
                + COMMON + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lighthouse-attn eval: error:") and "\n" not in err
    assert re.search(match, err), err


def test_missing_corrupt_and_incompatible_checkpoints(tiny_run, tmp_path, capsys):
    def error(path):
        assert main(["eval", "niah", "--checkpoint", str(path), "--out", str(tmp_path)]
                    + COMMON) == 2
        return capsys.readouterr().err

    assert "is not a directory" in error(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "holds no model" in error(tmp_path / "empty")

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_run / "final", corrupt)
    with open(corrupt / "model.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    assert "is corrupt" in error(corrupt)

    # weights of another model under this config
    other = Llama(EVAL_MODEL.replace(d_model=64, n_heads=4, n_kv_heads=2))
    mismatched = save_final_model(tmp_path / "mismatch", other.state_dict(), EVAL_MODEL, 1)
    assert "does not match the model config" in error(mismatched)

    # another tokenizer (a consistent checkpoint: the manifest is rewritten)
    tok = tmp_path / "tokenizer"
    shutil.copytree(tiny_run / "final", tok)
    config = read(tok / "config.json")
    config["tokenizer"] = {"type": "bpe", "vocab_size": 257, "sep_id": 256}
    (tok / "config.json").write_text(json.dumps(config))
    manifest = read(tok / "manifest.json")
    manifest["config.json"] = {"bytes": (tok / "config.json").stat().st_size,
                               "sha256": _sha256(tok / "config.json")}
    (tok / "manifest.json").write_text(json.dumps(manifest))
    assert "records an unknown tokenizer" in error(tok)


def test_loss_overlays_checkpoints(tiny_run, corpus, tmp_path, capsys):
    assert main(["eval", "loss", "--checkpoint", str(tiny_run), "--checkpoint",
                 str(tiny_run / "checkpoints" / "step_0000002"), "--label", "final",
                 "--label", "step 2", "--data", corpus, "--max-sequences", "4",
                 "--batch-size", "3", "--out", str(tmp_path)] + COMMON) == 0
    out = capsys.readouterr().out
    assert "4 x 512 tokens" in out
    path = tmp_path / "loss_final_vs_step_2.json"
    result = read(path)
    assert result["seq_len"] == TRAINED_SEQ_LEN
    assert [r["name"] for r in result["results"]] == ["final", "step 2"]
    for r in result["results"]:
        assert r["sequences"] == 4 and r["tokens"] == 4 * 512
        assert [(b["start"], b["end"]) for b in r["buckets"]][-1] == (256, 513)
    # the trained model beats its own early checkpoint
    assert result["results"][0]["loss"] < result["results"][1]["loss"]
    assert (tmp_path / "loss_final_vs_step_2.png").stat().st_size > 10_000
    assert "extrapolation" not in capsys.readouterr().err


def test_loss_beyond_the_training_length_says_so(tiny_run, corpus, tmp_path, capsys):
    assert main(["eval", "loss", "--checkpoint", str(tiny_run), "--data", corpus,
                 "--seq-len", "1024", "--max-sequences", "1", "--out", str(tmp_path)]
                + COMMON) == 0
    assert "trained at 512 tokens; positions beyond that (up to 1,024) measure length " \
           "extrapolation" in capsys.readouterr().err


def test_loss_reports_context_ranges_and_the_long_context_gain(tiny_run, corpus, tmp_path,
                                                               capsys):
    assert main(["eval", "loss", "--checkpoint", str(tiny_run), "--data", corpus,
                 "--seq-len", "4096", "--max-sequences", "1", "--out", str(tmp_path)]
                + COMMON) == 0
    out = capsys.readouterr().out
    assert "0-2K" in out and "2K-end" in out and "long-context gain" in out
    r = read(next(tmp_path.glob("loss_*.json")))["results"][0]
    assert [x["label"] for x in r["ranges"]] == ["0-2K", "2K-end"]
    lc = r["long_context"]
    assert lc["window"] == 2048 and lc["gain"] == pytest.approx(lc["loss_short"] -
                                                                lc["loss_full"])
    # too short for two windows: ranges still, no gain, and the table says why
    assert main(["eval", "loss", "--checkpoint", str(tiny_run), "--data", corpus,
                 "--max-sequences", "1", "--out", str(tmp_path / "b")] + COMMON) == 0
    assert "no long-context gain: it needs dense attention and seq_len >= 4,096" in \
        capsys.readouterr().out


@pytest.mark.parametrize("extra,match", [
    (["--label", "a", "--label", "b"], "one --label per --checkpoint"),
    (["--seq-len", "100000"], "shorter than one sequence"),
    (["--data", "MISSING.txt"], "does not exist"),
    (["--attention", "lighthouse", "--seq-len", "514"], "multiple of 4"),
])
def test_loss_errors(tiny_run, corpus, tmp_path, capsys, extra, match):
    args = ["eval", "loss", "--checkpoint", str(tiny_run), "--out", str(tmp_path)] + COMMON
    if "--data" not in extra:
        args += ["--data", corpus]
    assert main(args + extra) == 2
    assert match in capsys.readouterr().err


def test_recall_reports_every_lighthouse_layer_with_its_bounds(tiny_run, corpus, tmp_path,
                                                               capsys):
    assert main(["eval", "recall", "--checkpoint", str(tiny_run), "--data", corpus,
                 "--seq-len", "2048", "--sequences", "1", "--out", str(tmp_path)]
                + COMMON) == 0
    out = capsys.readouterr().out
    assert "selection" in out and "oracle" in out and "random" in out
    result = read(next(tmp_path.glob("recall_*.json")))
    assert [r["layer"] for r in result["layers"]] == [1, 2]
    assert result["lighthouse"]["scorer"] == "norm"
    for row in result["layers"]:
        for name in ("selection", "oracle", "random"):
            assert 0 <= row[name]["exact"] <= 1 and len(row[name]["exact_per_head"]) == 4
            assert abs(row[name]["exact"] + row[name]["pooled"] - 1) < 1e-9
        assert row["oracle"]["exact"] >= row["selection"]["exact"] - 1e-9  # L=2: optimal
    assert [p["topk"] for p in result["recall_vs_topk"]["points"]] == [128, 256]
    assert next(tmp_path.glob("recall_*.png")).stat().st_size > 10_000
    # the same q, k, v under another scorer and selection rule: a file of its own
    assert main(["eval", "recall", "--checkpoint", str(tiny_run), "--data", corpus,
                 "--seq-len", "2048", "--sequences", "1", "--scorer", "dilated", "--selection",
                 "causal", "--out", str(tmp_path)] + COMMON) == 0
    other = read(next(tmp_path.glob("recall_*_dilated_causal.json")))
    assert other["lighthouse"]["scorer"] == "dilated"
    assert other["lighthouse"]["selection"] == "causal"
    assert [r["selection"]["exact"] for r in other["layers"]] != \
        [r["selection"]["exact"] for r in result["layers"]]
    assert main(["eval", "recall", "--checkpoint", str(tiny_run), "--data", corpus,
                 "--seq-len", "2048", "--plot-layer", "0", "--out", str(tmp_path)]
                + COMMON) == 2
    assert "--plot-layer 0 is not a Lighthouse layer" in capsys.readouterr().err


def test_inspect_writes_the_selection(tiny_run, corpus, tmp_path, capsys):
    assert main(["inspect", "--checkpoint", str(tiny_run), "--layer", "2", "--head", "1",
                 "--text", corpus, "--seq-len", "2048", "--out", str(tmp_path)]
                + COMMON[1:]) == 0
    out = capsys.readouterr().out
    assert "2,048 tokens" in out and "gathered length 1,024" in out
    result = read(tmp_path / "inspect_tiny_layer2_head1.json")
    assert result["layer"] == 2 and result["head"] == 1 and result["seq_len"] == 2048
    assert len(result["heads"]) == 4  # gqa="expand": every query head selects
    for h in result["heads"]:  # L=2, p=4, K=128: 512 of 2048 positions at token resolution
        assert h["level_fraction"] == [0.25, 0.75]
    assert (tmp_path / "inspect_tiny_layer2_head1.png").stat().st_size > 10_000
    # another budget, too large for the training length (512): its shortest length; a dense
    # layer; all heads
    assert main(["inspect", "--checkpoint", str(tiny_run), "--layer", "0", "--text", corpus,
                 "--num-levels", "3", "--topk", "256", "--gqa", "shared", "--out",
                 str(tmp_path), "--attention", "dense"] + COMMON[1:]) == 0
    out = capsys.readouterr().out
    assert "this layer runs dense in stage 1" in out
    result = read(tmp_path / "inspect_tiny_layer0.json")
    assert result["seq_len"] == 4096 and len(result["heads"]) == 2
    assert result["selection_config"]["num_levels"] == 3


@pytest.mark.parametrize("extra,match", [
    (["--layer", "3"], "--layer 3 is out of range for a model with 3 layers"),
    (["--layer", "1", "--head", "4"], "--head 4 is out of range"),
    (["--layer", "1", "--head", "x"], "--head must be a head index or 'all'"),
    (["--layer", "1", "--seq-len", "1000", "--topk", "256"], "Nearest valid seq_len: 1024"),
    (["--layer", "1", "--topk", "1024", "--num-levels", "4"],
     "the text has 40,0"),
])
def test_inspect_errors(tiny_run, corpus, tmp_path, capsys, extra, match):
    assert main(["inspect", "--checkpoint", str(tiny_run), "--text", corpus, "--out",
                 str(tmp_path)] + COMMON[1:] + extra) == 2
    assert match in capsys.readouterr().err


@pytest.mark.gpu
def test_commands_run_on_cuda(tiny_run, corpus, tmp_path):
    gpu = ["--no-progress", "--device", "cuda", "--out", str(tmp_path)]
    assert main(["eval", "niah", "--checkpoint", str(tiny_run), "--trials", "2"] + gpu) == 0
    assert main(["eval", "niah", "--checkpoint", str(tiny_run), "--trials", "2", "--attention",
                 "lighthouse", "--contexts", "512", "--precision", "fp32"] + gpu) == 0
    assert read(tmp_path / "niah_tiny.json")["device"].startswith("cuda")
    assert main(["eval", "loss", "--checkpoint", str(tiny_run), "--data", corpus,
                 "--max-sequences", "4"] + gpu) == 0
    assert main(["inspect", "--checkpoint", str(tiny_run), "--layer", "1", "--text", corpus,
                 "--seq-len", "2048", "--device", "cuda", "--out", str(tmp_path)]) == 0
    result = read(tmp_path / "inspect_tiny_layer1.json")
    assert all(h["level_fraction"] == [0.25, 0.75] for h in result["heads"])
