"""`export` and `generate`: the finished model leaves the project and loads with no code of
ours; greedy generation agrees between our cached decoder and transformers'."""

import json
import random

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM, AutoTokenizer

from lighthouse_attn.cli import main
from lighthouse_attn.data import SEP_ID, TOKENIZER
from lighthouse_attn.models import PRESETS, Llama
from lighthouse_attn.models.decode import generate
from lighthouse_attn.train.checkpoint import save_checkpoint, save_final_model

DEMO = PRESETS["demo"]
GQA_TIED = DEMO.replace(n_heads=4, n_kv_heads=1, tie_embeddings=True, n_layers=3)
# larger weights for the generation tests: logits far apart, so greedy choices are stable
LOUD = GQA_TIED.replace(init_std=0.2)


def _run_dir(tmp_path, config, name="run", stage1_only=False):
    torch.manual_seed(0)
    model = Llama(config)
    run = tmp_path / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"seq_len": 2048},
                                                 "model": config.to_dict()}))
    if stage1_only:
        save_checkpoint(run, 5, model.state_dict(), {}, {"stage": "lighthouse"}, {}, config,
                        "lighthouse")
    else:
        save_final_model(run, model.state_dict(), config, 10)
    return run, model


@pytest.mark.parametrize("config", [DEMO, GQA_TIED], ids=["demo", "gqa-tied"])
def test_exported_model_gives_our_logits(tmp_path, config, capsys):
    run, model = _run_dir(tmp_path, config)
    assert main(["export", str(run), str(tmp_path / "out")]) == 0
    assert "LlamaForCausalLM" in capsys.readouterr().out
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    if config.tie_embeddings:
        assert hf.lm_head.weight is hf.model.embed_tokens.weight
    model.set_attention("dense")
    x = torch.randint(0, 257, (2, 300), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), rtol=1e-5, atol=1e-5)


def test_tokenizer_round_trips_and_matches_our_pipeline(tmp_path):
    run, _ = _run_dir(tmp_path, DEMO)
    assert main(["export", str(run), str(tmp_path / "out")]) == 0
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    rng = random.Random(0)
    pool = [chr(c) for c in (*range(0, 0x80), 0xE9, 0x3A9, 0x4E2D, 0x1F680, 0x10FFFF)]
    for _ in range(20):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 60)))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == TOKENIZER.encode(text)
        assert tok.decode(ids) == text
    assert tok.eos_token_id == SEP_ID and tok.convert_ids_to_tokens(SEP_ID) == tok.eos_token
    assert tok(tok.eos_token, add_special_tokens=False)["input_ids"] == [SEP_ID]


def test_greedy_generation_agrees_with_transformers_and_a_full_recompute(tmp_path):
    run, model = _run_dir(tmp_path, LOUD)
    assert main(["export", str(run), str(tmp_path / "out")]) == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    model.eval().set_attention("dense")
    prompt = TOKENIZER.encode("def fibonacci(n):\n    ")
    ours = generate(model, prompt, 24)
    ids = torch.tensor([prompt])
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                         do_sample=False, eos_token_id=None, pad_token_id=SEP_ID)
    assert ours == theirs[0, len(prompt):].tolist()
    seq = list(prompt)  # without the cache: the whole sequence again for every token
    with torch.no_grad():
        for _ in range(24):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert ours == seq[len(prompt):]


def test_sampling_is_seeded_and_top_p_one_token_is_greedy(tmp_path):
    _, model = _run_dir(tmp_path, LOUD)
    model.eval().set_attention("dense")
    prompt = TOKENIZER.encode("import os\n")
    a = generate(model, prompt, 16, temperature=1.0, top_p=0.9, seed=5)
    assert a == generate(model, prompt, 16, temperature=1.0, top_p=0.9, seed=5)
    assert generate(model, prompt, 16, temperature=1.0, top_p=1e-9, seed=1) == \
        generate(model, prompt, 16)


def test_generate_command_on_run_and_export(tmp_path, capsys):
    run, _ = _run_dir(tmp_path, LOUD)
    assert main(["export", str(run), str(tmp_path / "out")]) == 0
    capsys.readouterr()
    texts = []
    for path in (run, tmp_path / "out"):
        assert main(["generate", "--checkpoint", str(path), "--prompt", "x = ",
                     "--max-new-tokens", "12", "--temperature", "0", "--no-stop"]) == 0
        out = capsys.readouterr()
        assert "tokens/s" in out.err
        texts.append(out.out)
    assert texts[0] == texts[1] and texts[0].startswith("x = ")
    prompt_file = tmp_path / "p.txt"
    prompt_file.write_text("import sys\n")
    assert main(["generate", "--checkpoint", str(run), "--prompt-file", str(prompt_file),
                 "--max-new-tokens", "4"]) == 0


def test_stage1_checkpoint_is_exported_with_a_warning(tmp_path, capsys):
    run, _ = _run_dir(tmp_path, DEMO, stage1_only=True)
    assert main(["export", str(run), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "trained with Lighthouse attention, before any dense recovery" in err


@pytest.mark.parametrize("case,match", [
    ("no-model", "holds no model"),
    ("unwritable", "cannot write"),
    ("occupied", "already holds files; choose a new directory"),
    ("file", "is a file"),
])
def test_export_errors_are_one_line(tmp_path, capsys, case, match):
    run, _ = _run_dir(tmp_path, DEMO)
    out = tmp_path / "out"
    if case == "no-model":
        (tmp_path / "empty").mkdir()
        run = tmp_path / "empty"
    elif case == "unwritable":
        out = "/proc/lighthouse-export-test/out"
    elif case == "occupied":
        out.mkdir()
        (out / "x").write_text("x")
    else:
        out.write_text("x")
    assert main(["export", str(run), str(out)]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1


def test_export_never_deletes_the_run_or_other_files(tmp_path, capsys, monkeypatch):
    """`export RUN RUN --overwrite` and `export par/run par --overwrite` used to delete the
    run; --overwrite replaces only an earlier export."""
    par = tmp_path / "par"
    par.mkdir()
    run, _ = _run_dir(par, DEMO)
    (par / "notes.txt").write_text("mine")
    before = sorted(p.relative_to(par) for p in par.rglob("*"))
    for out, match in ((run, "is or contains the run being exported"),
                       (par, "is or contains the run being exported"),
                       (tmp_path, "is or contains the run being exported")):
        assert main(["export", str(run), str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert match in err and len(err.strip().splitlines()) == 1
    assert sorted(p.relative_to(par) for p in par.rglob("*")) == before
    # a directory of other files is never replaced, with or without --overwrite
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert main(["export", str(run), str(other), "--overwrite"]) == 2
    assert "not an earlier export" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "x"
    # `export RUN .` in a busy folder, and a path below a file: one line each
    monkeypatch.chdir(par)
    assert main(["export", "run", "."]) == 2
    assert "is or contains the run" in capsys.readouterr().err
    assert main(["export", str(run), str(par / "notes.txt" / "sub")]) == 2
    assert "notes.txt is a file, not a directory" in capsys.readouterr().err
    # an earlier export is replaced with --overwrite
    out = tmp_path / "exp"
    assert main(["export", str(run), str(out)]) == 0
    assert main(["export", str(run), str(out), "--overwrite"]) == 0
    assert (out / "model.safetensors").is_file()


def test_exporting_an_unfinished_run_warns(tmp_path, capsys):
    run, _ = _run_dir(tmp_path, DEMO, stage1_only=True)
    assert main(["export", str(run), str(tmp_path / "out")]) == 0
    assert "has not finished (no final/ model): exporting its newest checkpoint, step_" in \
        capsys.readouterr().err


def test_generate_errors(tmp_path, capsys):
    run, _ = _run_dir(tmp_path, DEMO)
    for extra, match in ((["--prompt", ""], "the prompt is empty"),
                         (["--prompt", "a", "--top-p", "0"], "--top-p in (0, 1]"),
                         (["--prompt-file", str(tmp_path / "nope.txt")], "cannot read")):
        assert main(["generate", "--checkpoint", str(run), *extra]) == 2
        assert match in capsys.readouterr().err
