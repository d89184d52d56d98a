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
    bench.add_arguments(parser)
    args = parser.parse_args(["--dense-backends", "cudnn,flash", "--seq-lens", "65536"])
    assert args.dense_backends == ["cudnn", "flash"] and args.topk == 2048
