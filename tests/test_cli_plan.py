"""`lighthouse-attn plan`."""

import json
import subprocess
import sys

from lighthouse_attn.cli import main


def test_plan_paper_default(capsys):
    assert main(["plan", "--seq-len", "98304", "--num-levels", "3", "--pooling-factor", "4",
                 "--topk", "1536"]) == 0
    out = capsys.readouterr().out
    assert "18,432" in out and "28.4x fewer" in out and "tiles T                  12" in out


def test_plan_json_and_suggest(capsys):
    assert main(["plan", "--seq-len", "262144", "--topk", "4096", "--suggest", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plan"]["gathered_length"] == 49_152
    assert len(data["suggestions"]) > 3
    ratios = [abs(r["attention_flops_ratio"] / data["target_ratio"] - 1)
              for r in data["suggestions"]]
    assert ratios[0] < 0.01  # the config itself is the nearest


def test_plan_invalid_exit_2(capsys):
    assert main(["plan", "--seq-len", "98305"]) == 2
    err = capsys.readouterr().err
    assert "multiple of 192" in err and "98304" in err
    assert main(["plan", "--topk", "100"]) == 2
    assert main(["plan", "--seq-len", "1000", "--heads", "8", "--kv-heads", "3"]) == 2


def test_plan_invalid_with_suggest_lists_alternatives(capsys):
    assert main(["plan", "--seq-len", "1000000", "--suggest"]) == 0
    out = capsys.readouterr().out
    assert "not valid" in out and "valid (L, p, K)" in out


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "lighthouse_attn.cli", "plan", "--seq-len", "7"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "too short" in r.stderr
