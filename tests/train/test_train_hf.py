"""`lighthouse-attn train --hf-config`: a transformers architecture through the two-stage loop.

A tiny Qwen2 with tied embeddings (3 layers, layer 0 dense) from a config.json written here; no
downloads. Lighthouse L=2, p=4, K=128 at seq_len 512 keeps layers 1-2 really sparse.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")

from train_helpers import losses, make_corpus, metrics, tiny_run
from transformers import AutoModelForCausalLM, Qwen2Config

import lighthouse_attn.hf.attention as hf_attention
from lighthouse_attn import LighthouseConfig
from lighthouse_attn.cli import main
from lighthouse_attn.hf import CONFIG_KEY, attention_modules
from lighthouse_attn.hf import lighthouse_layers as hf_lighthouse_layers
from lighthouse_attn.models import HFCausalLM, HFModelConfig
from lighthouse_attn.train import TrainingError, load_model, train
from lighthouse_attn.train.checkpoint import list_checkpoints

LH = LighthouseConfig(num_levels=2, pooling_factor=4, topk=128)
# the run of tiny_run() as options, for the command line
RUN_ARGS = ["--num-levels", "2", "--pooling-factor", "4", "--topk", "128", "--dense-layers", "0",
            "--seq-len", "512", "--batch-size", "2", "--lighthouse-steps", "3",
            "--dense-steps", "3", "--warmup-steps", "2", "--lr", "0.003", "--ckpt-every", "2",
            "--threads", "1", "--no-progress"]


def write_config(directory, vocab_size=300, **overrides):
    kw = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              head_dim=8, intermediate_size=64, vocab_size=vocab_size,
              max_position_embeddings=4096, tie_word_embeddings=True, use_cache=False)
    kw.update(overrides)
    directory.mkdir(parents=True, exist_ok=True)
    Qwen2Config(**kw).save_pretrained(directory)
    return str(directory / "config.json")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def hf_config(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("qwen2"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, corpus, hf_config):
    """A run from the command line; records, per forward pass, which layers run Lighthouse,
    the attention implementation of every layer and how often the Lighthouse op ran."""
    run_dir = tmp_path_factory.mktemp("runs") / "done"
    seen = []
    real_forward, real_op = HFCausalLM.forward, hf_attention.lighthouse_attention
    calls = {"op": 0}

    def forward(self, input_ids):
        before = calls["op"]
        logits = real_forward(self, input_ids)
        impls = sorted({m.config._attn_implementation for m in attention_modules(self.lm)})
        seen.append((hf_lighthouse_layers(self.lm), impls, calls["op"] - before))
        return logits

    def op(*args, **kwargs):
        calls["op"] += 1
        return real_op(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HFCausalLM, "forward", forward)
        mp.setattr(hf_attention, "lighthouse_attention", op)
        assert main(["train", "--hf-config", hf_config, *RUN_ARGS, "--data", corpus,
                     "--run-dir", str(run_dir)]) == 0
    return run_dir, seen


def test_two_stage_run_switches_at_the_right_step(finished, capsys):
    run_dir, seen = finished
    assert [r["stage"] for r in metrics(run_dir)] == ["lighthouse"] * 3 + ["dense"] * 3
    # steps 1-3: layers 1 and 2 run the Lighthouse op; steps 4-6: every layer is SDPA
    assert seen == [([1, 2], ["lighthouse"], 2)] * 3 + [([], ["sdpa"], 0)] * 3
    assert "step 3: switch to dense SDPA in every layer" in (run_dir / "train.log").read_text()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["preset"] == "hf-qwen2"
    assert config["model"]["hf_config"]["model_type"] == "qwen2"
    assert config["model"]["dense_layers"] == [0] and config["model"]["lighthouse"] == \
        LH.to_dict()
    assert [s for s, _ in list_checkpoints(run_dir)] == [3, 4, 6]  # keep 3, protect 3
    records = metrics(run_dir)
    assert records[-1]["loss"] < records[0]["loss"] and all(
        r["tokens"] == r["step"] * 1024 for r in records)
    assert (run_dir / "loss.png").is_file()
    summary = (run_dir / "summary.md").read_text()
    assert "| 1: Lighthouse | 3 |" in summary and "| 2: dense | 3 |" in summary
    assert "ordinary Hugging Face checkpoint" in summary


def test_final_model_is_an_ordinary_hf_checkpoint(finished, hf_config):
    run_dir, _ = finished
    final = run_dir / "final"
    assert sorted(os.listdir(final)) == ["config.json", "generation_config.json",
                                         "model.safetensors", "tokenizer.json",
                                         "tokenizer_config.json"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(final)  # the byte tokenizer, as for every final model
    assert tok("é", add_special_tokens=False)["input_ids"] == [0xC3, 0xA9]
    loaded, info = AutoModelForCausalLM.from_pretrained(final, attn_implementation="sdpa",
                                                        output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    fresh = AutoModelForCausalLM.from_config(Qwen2Config.from_json_file(hf_config))
    assert loaded.state_dict().keys() == fresh.state_dict().keys()
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight  # still tied
    saved = json.loads((final / "config.json").read_text())
    assert saved[CONFIG_KEY]["dense_layers"] == [0]
    # the same weights as the last checkpoint (step 6), and load_model gives the same logits
    model, meta = load_model(run_dir)
    assert isinstance(model, HFCausalLM) and meta["kind"] == "final"
    assert model.attention_mode == "dense" and hf_lighthouse_layers(model.lm) == []
    ckpt, _ = load_model(run_dir / "checkpoints" / "step_0000006")
    x = torch.randint(0, 257, (2, 512), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ckpt(x)
        assert torch.equal(model(x), want)
        assert torch.equal(loaded.eval()(x).logits.float(), want)


def test_interrupted_and_resumed_run_matches_uninterrupted(finished, hf_config, corpus,
                                                           tmp_path):
    done, _ = finished
    model = HFModelConfig.from_file(hf_config, LH, (0,))
    run = tiny_run(tmp_path, "cut", corpus, preset="hf-qwen2")

    def interrupt(record):
        if record["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    result = train(run, model, progress=False, on_step=interrupt)
    assert result.status == "interrupted" and result.step == 2 and result.final_dir is None
    assert main(["train", "--resume", run.run_dir, "--no-progress"]) == 0
    assert [r["step"] for r in metrics(run.run_dir)] == [1, 2, 3, 4, 5, 6]
    assert losses(run.run_dir) == pytest.approx(losses(done), rel=1e-6)
    a, b = (AutoModelForCausalLM.from_pretrained(d / "final") for d in (done, tmp_path / "cut"))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7, msg=name)


def test_non_finite_loss_stops_with_the_last_good_checkpoint(hf_config, corpus, tmp_path,
                                                             monkeypatch):
    real = HFCausalLM.forward
    calls = {"n": 0}

    def forward(self, input_ids):
        calls["n"] += 1
        return real(self, input_ids) * (float("nan") if calls["n"] == 3 else 1.0)

    monkeypatch.setattr(HFCausalLM, "forward", forward)
    run = tiny_run(tmp_path, "nan", corpus, ckpt_every=2)
    with pytest.raises(TrainingError, match=r"non-finite loss nan .* at step 3 .*step_0000002"):
        train(run, HFModelConfig.from_file(hf_config, LH, (0,)), progress=False)
    assert [s for s, _ in list_checkpoints(run.run_dir)] == [2]


def test_vocab_too_small_for_the_byte_tokenizer(capsys, tmp_path, corpus):
    small = write_config(tmp_path / "small", vocab_size=200)
    assert main(["train", "--hf-config", small, *RUN_ARGS, "--data", corpus, "--run-dir",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--vocab-size 200 is smaller than the tokenizer's 257" \
        in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra,flags", [(["--preset", "demo"], "--preset"),
                                         (["--n-layers", "4", "--d-model", "64"],
                                          "--d-model, --n-layers")])
def test_preset_or_shape_options_conflict_with_hf_config(extra, flags, capsys, hf_config):
    assert main(["train", "--hf-config", hf_config, *extra, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"--hf-config takes the architecture from its config.json: drop {flags}" in err


@pytest.mark.parametrize("extra,match", [
    (["--dense-layers", "0,3"], "error: --dense-layers entry 3 is out of range"),
    (["--hf-config", "MISSING.json"], "no config.json at 'MISSING.json'"),
])
def test_bad_hf_settings_are_one_line_errors(extra, match, capsys, hf_config):
    assert main(["train", "--hf-config", hf_config, *extra, "--dry-run"]) == 2
    assert match in capsys.readouterr().err


def test_two_processes_shard_the_decoder_layers_and_match_one(hf_config, corpus, tmp_path):
    """FSDP2 under torchrun (2 CPU processes, gloo) shards model.layers: same losses and final
    weights as one process."""
    common = ["--hf-config", hf_config, *RUN_ARGS, "--data", corpus, "--batch-size", "4",
              "--dense-steps", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "lighthouse_attn", "train", *common, "--run-dir", str(tmp_path / "two"),
         "--activation-checkpointing"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 processes" in proc.stdout and "activation checkpointing on" in proc.stdout
    assert main(["train", *common, "--run-dir", str(tmp_path / "one")]) == 0
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)
    one, two = (AutoModelForCausalLM.from_pretrained(tmp_path / d / "final")
                for d in ("one", "two"))
    for (name, p), q in zip(one.state_dict().items(), two.state_dict().values()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4, msg=name)


def test_bench_train_times_an_hf_config(hf_config, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "train", "--hf-config", hf_config, "--num-levels", "2", "--topk",
                 "128", "--dense-layers", "0", "--seq-len", "512", "--batch-size", "1",
                 "--steps", "1", "--warmup-steps", "0", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["preset"] == "hf-qwen2" and r["lighthouse_layers"] == [1, 2]
    assert set(r["results"]) == {"lighthouse", "dense"}
    assert r["parameters"] == sum(p.numel() for p in AutoModelForCausalLM.from_config(
        Qwen2Config.from_json_file(hf_config)).parameters())


@pytest.mark.parametrize("make,match", [
    (lambda d: _gpt2(d), "no attention layers that dispatch through"),
    (lambda d: write_config(d, sliding_window=128, use_sliding_window=True),
     "sliding window of 128 tokens, shorter than --seq-len 512"),
    (lambda d: write_config(d, attention_dropout=0.1), "attention_dropout 0.1"),
])
def test_dry_run_refuses_what_step_1_would(corpus, tmp_path, capsys, make, match):
    path = make(tmp_path / "cfg")
    args = ["train", "--hf-config", path, *RUN_ARGS, "--data", corpus, "--run-dir",
            str(tmp_path / "r")]
    assert main(args + ["--dry-run"]) == 2
    assert match in capsys.readouterr().err
    assert main(args) == 2  # and the real run, before its directory exists
    assert not (tmp_path / "r").exists()


def _gpt2(directory):
    from transformers import GPT2Config

    directory.mkdir(parents=True, exist_ok=True)
    GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=300, n_positions=4096
               ).save_pretrained(directory)
    return str(directory)


def test_context_parallel_is_refused_for_hf_models(corpus, hf_config, tmp_path, capsys):
    assert main(["train", "--hf-config", hf_config, *RUN_ARGS, "--data", corpus,
                 "--context-parallel", "2", "--run-dir", str(tmp_path / "r"), "--dry-run"]) == 2
    assert ("a Hugging Face model trains without it (set --context-parallel 1)"
            in capsys.readouterr().err)


def test_staggered_switch_is_refused_for_hf_models(corpus, hf_config, tmp_path, capsys):
    assert main(["train", "--hf-config", hf_config, *RUN_ARGS, "--data", corpus,
                 "--switch-ramp", "1", "--run-dir", str(tmp_path / "r"), "--dry-run"]) == 2
    assert ("a Hugging Face model switches all at once (set --switch-ramp 0)"
            in capsys.readouterr().err)
