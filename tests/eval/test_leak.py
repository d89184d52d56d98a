"""`eval leak`: the paper's selection moves outputs before a cut, dense and causal never do."""

import json
from dataclasses import replace

import pytest
import torch
from eval_helpers import EVAL_MODEL, shared_corpus, shared_run

from lighthouse_attn.cli import main
from lighthouse_attn.data import PackedSequences, load_tokens
from lighthouse_attn.eval.leak import measure_leak
from lighthouse_attn.models import Llama

COMMON = ["--no-progress", "--threads", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 1024 tokens: 256 coarsest entries in the one tile, so the selection matters
    return PackedSequences(load_tokens([shared_corpus(tmp_path_factory)]), 1024)


@pytest.mark.parametrize("selection,mode,leaks", [
    ("paper", "lighthouse", True), ("causal", "lighthouse", False), ("paper", "dense", False)])
def test_leak_only_under_the_papers_selection(data, selection, mode, leaks):
    torch.manual_seed(0)
    config = replace(EVAL_MODEL, lighthouse=replace(EVAL_MODEL.lighthouse, selection=selection))
    model = Llama(config).eval()
    model.set_attention(mode)
    result = measure_leak(model, data, sequences=2, cuts=3, progress=False)
    assert len(result.cuts) == 6 and all(2 <= r["cut"] < 1024 for r in result.cuts)
    if leaks:
        assert result.max_logit_change > 0 and result.changed_fraction > 0
    else:
        assert result.max_logit_change == 0 and result.mean_loss_change == 0
        assert result.changed_fraction == 0


def test_cli_writes_json_and_verdict(tmp_path_factory, tmp_path, capsys):
    run = shared_run(tmp_path_factory)
    corpus = shared_corpus(tmp_path_factory)
    args = ["eval", "leak", "--checkpoint", str(run), "--data", corpus, "--seq-len", "1024",
            "--sequences", "1", "--cuts", "2", "--out", str(tmp_path), *COMMON]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "paper selection" in out and "depend on the text after them" in out
    saved = json.loads(next(tmp_path.glob("leak_*_lighthouse.json")).read_text())
    assert saved["attention"] == "lighthouse" and len(saved["cuts"]) == 2
    assert main(args + ["--attention", "dense"]) == 0
    assert "no output before a cut depends" in capsys.readouterr().out


def test_cli_errors(tmp_path_factory, tmp_path, capsys):
    run = shared_run(tmp_path_factory)
    corpus = shared_corpus(tmp_path_factory)
    base = ["eval", "leak", "--checkpoint", str(run), "--data", corpus, "--out", str(tmp_path),
            *COMMON]
    assert main(base + ["--cuts", "0"]) == 2
    assert "--cuts must be >= 1" in capsys.readouterr().err
    assert main(base + ["--seq-len", "1002"]) == 2  # not a multiple of p^(L-1) * T = 4
    assert "seq_len 1002" in capsys.readouterr().err
