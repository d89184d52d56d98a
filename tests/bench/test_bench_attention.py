"""`lighthouse-attn bench attention` logic that runs without a GPU: cases, table, plot."""

import argparse

import pytest

from lighthouse_attn.bench import attention as bench
from lighthouse_attn.cli import main


def test_parse_cases_defaults_and_overrides():
    cases = bench.parse_cases(bench.ISSUE_CASES, 3, 4)
    assert [(n, c.topk, c.num_levels) for n, c in cases] == [
        (32768, 512, 3), (32768, 2048, 3), (131072, 2048, 3), (524288, 2048, 3),
        (524288, 8192, 3), (1048576, 4096, 4)]
    assert cases[-1][1].gathered_length(1048576) == 65536
    assert all(c.backend == "triton" for _, c in cases)


@pytest.mark.parametrize("text,match", [("32768", "write N:K"), ("1:2:3:4:5", "write N:K"),
                                        ("32769:512", "multiple of"),
                                        ("32768:500", "multiple of 128")])
def test_parse_cases_rejects_bad_input(text, match):
    with pytest.raises(ValueError, match=match):
        bench.parse_cases(text, 3, 4)


def _row(n, k, inner, lh, dense=None):
    cfg = bench.parse_cases(f"{n}:{k}", 3, 4)[0][1]
    return {"seq_len": n, "topk": k, "num_levels": 3, "pooling_factor": 4,
            "gathered_length": cfg.gathered_length(n), "dense": dense or {},
            "inner": {"fwd_ms": inner / 3, "fwd_bwd_ms": inner}, "inner_fwd_bwd_ms": inner,
            "lighthouse": {"fwd_ms": lh / 3, "fwd_bwd_ms": lh},
            "overhead_vs_inner": lh / inner, "target_vs_inner": 1.2,
            **({"speedup_vs_dense_fwd_bwd": dense["cudnn"]["fwd_bwd_ms"] / lh} if dense else {})}


def test_table_and_plot(tmp_path):
    rows = [_row(131072, 2048, 8.0, 9.5, {"cudnn": {"fwd_ms": 60.0, "fwd_bwd_ms": 225.0}}),
            _row(524288, 2048, 31.0, 34.5)]
    rows[1]["deterministic_vs_default"] = 1.234
    rows[1]["cuda_graphs"] = {"overhead_vs_inner": 1.456}
    table = bench.format_table(rows)
    assert "1.19x" in table and "23.7x" in table and "1.11x" in table
    assert "steady" not in table
    rows[0]["overhead_vs_inner_steady"] = 1.0875
    table = bench.format_table(rows)
    assert "steady" in table and "1.09x" in table
    assert "det/default" in table and "1.23x" in table and "1.46x" in table
    assert "causal/paper" not in table
    rows[1]["causal_vs_paper"] = 1.034
    table = bench.format_table(rows)
    assert "causal/paper" in table and "1.03x" in table
    path = tmp_path / "a.png"
    bench.plot(rows, path, {"device": "test"})
    assert path.stat().st_size > 10_000


def test_cli_needs_a_gpu(capsys):
    if bench.torch.cuda.is_available():
        pytest.skip("has a GPU")
    assert main(["bench", "attention", "--cases", "32768:512"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_arguments_parse():
    parser = argparse.ArgumentParser()
    from lighthouse_attn.cli.bench import _attention_arguments

    _attention_arguments(parser)
    args = parser.parse_args(["--dense-backends", "cudnn,flash", "--seq-lens", "65536"])
    assert args.dense_backends == ["cudnn", "flash"] and args.topk == 2048


def _result(path, device, rows):
    import json

    path.write_text(json.dumps({"benchmark": "attention", "environment": {"device": device},
                                "settings": {"repeats": 15}, "cases": rows}))
    return str(path)


def test_merge_joins_runs_in_order_and_plots(tmp_path, capsys):
    a = _result(tmp_path / "long.json", "H100",
                [_row(524288, 2048, 31.0, 34.5), _row(524288, 8192, 127.0, 132.0)])
    short = [_row(131072, 2048, 8.0, 9.5, {"cudnn": {"fwd_ms": 60.0, "fwd_bwd_ms": 225.0}})]
    short[0]["cuda_graphs"] = {"overhead_vs_inner": 1.17}
    b = _result(tmp_path / "short.json", "H100", short)
    out = tmp_path / "all.json"
    assert main(["bench", "attention", "--merge", f"{a},{b}", "--out", str(out)]) == 0
    merged = bench.json.loads(out.read_text())
    assert [(c["seq_len"], c["topk"]) for c in merged["cases"]] == [
        (131072, 2048), (524288, 2048), (524288, 8192)]
    assert merged["merged_from"] == [a, b] and out.with_suffix(".png").stat().st_size > 10_000
    rows = capsys.readouterr().out.splitlines()[2:5]
    assert rows[0].endswith("1.17x") and rows[1].endswith("-") and rows[2].endswith("-")


def test_merge_rejects_bad_input(tmp_path):
    good = _result(tmp_path / "a.json", "H100", [_row(131072, 2048, 8.0, 9.5)])
    other = _result(tmp_path / "b.json", "H200", [_row(131072, 2048, 8.0, 9.0)])
    with pytest.raises(ValueError, match="different devices"):
        bench.merge_results([good, other])
    with pytest.raises(ValueError, match="cannot read"):
        bench.merge_results([str(tmp_path / "missing.json")])
    (tmp_path / "c.json").write_text('{"benchmark": "train", "cases": []}')
    with pytest.raises(ValueError, match="not a bench attention result"):
        bench.merge_results([str(tmp_path / "c.json")])


@pytest.mark.parametrize("p,fused", [(4, True), (2, False)])
def test_stage_breakdown_times_the_stages_the_layer_runs(monkeypatch, p, fused):
    """The breakdown's scores stage is the norm kernel with q and k's coarsest level where
    the eager layer uses it (p^(L-1) = 16), the plain norms otherwise (Triton interpreter)."""
    pytest.importorskip("triton")
    import torch

    from lighthouse_attn import LighthouseConfig
    from lighthouse_attn.ops.triton import scores

    calls = []
    means = scores.row_norms_and_means
    monkeypatch.setattr(scores, "row_norms_and_means", lambda *a: calls.append(1) or means(*a))
    cfg = LighthouseConfig(num_levels=3, pooling_factor=p, topk=128, backend="triton")
    q, k, v = (torch.randn(1, 1, cfg.min_seq_len, 16) for _ in range(3))
    stages = bench._stage_breakdown(q, k, v, cfg, 0, 1)
    assert set(stages) == {"scores", "select", "position_map (user selections only)",
                           "gather_fwd", "scatter_fwd", "scatter_bwd", "gather_bwd"}
    assert all(t > 0 for t in stages.values())
    assert bool(calls) == fused
