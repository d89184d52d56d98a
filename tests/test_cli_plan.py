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


def test_plan_warns_when_lighthouse_costs_more_and_l1_has_no_tiles(capsys):
    assert main(["plan", "--seq-len", "4096", "--num-levels", "2", "--topk", "1024"]) == 0
    out = capsys.readouterr()
    assert "1.56x MORE than dense" in out.out and "costs more than dense" in out.err
    assert main(["plan", "--num-levels", "1"]) == 0
    out = capsys.readouterr()
    assert "L=1: no selection" in out.out and "exactly dense" in out.err


def test_plan_suggest_errors(capsys):
    assert main(["plan", "--seq-len", "100", "--suggest"]) == 2
    assert "no valid (L, p, K) at N=100" in capsys.readouterr().err
    for bad in ("0", "nan", "1.5"):
        assert main(["plan", "--suggest", "--target-ratio", bad]) == 2
        assert "--target-ratio must be a number between 0 and 1" in capsys.readouterr().err
    assert main(["plan", "--target-ratio", "0.05"]) == 2
    assert "add --suggest" in capsys.readouterr().err


def test_help_imports_no_subcommand():
    code = ("import sys\nfrom lighthouse_attn.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or "
            "m.startswith('lighthouse_attn.') and "
            "m.split('.')[1] in ('train', 'eval', 'bench', 'compare', 'models', 'plan')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"  # --help stays fast: not even torch


def test_no_progress_silences_transformers(monkeypatch):
    pytest = __import__("pytest")
    transformers = pytest.importorskip("transformers")
    from lighthouse_attn.progress import quiet_libraries

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    transformers.utils.logging.enable_progress_bar()
    quiet_libraries()
    assert not transformers.utils.logging.is_progress_bar_enabled()
    assert __import__("os").environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    transformers.utils.logging.enable_progress_bar()


def test_plan_context_parallel_share_and_refusal(capsys):
    assert main(["plan", "--seq-len", "98304", "--topk", "1536", "--context-parallel", "2"]) == 0
    assert "4 chunks of 24,576 tokens, K=384 each" in capsys.readouterr().out
    assert main(["plan", "--seq-len", "98304", "--topk", "1536", "--context-parallel", "4"]) == 2
    assert "try topk=2048" in capsys.readouterr().err


def test_plan_context_parallel_prints_traffic_both_ways(capsys):
    """Forward and backward bytes per layer; the dense layer's gathers are bounded by groups
    of kv heads, so at 1M tokens it holds three 512 MiB heads' worth, not the whole 4 GiB."""
    assert main(["plan", "--seq-len", "1048576", "--num-levels", "4", "--topk", "4096",
                 "--context-parallel", "4"]) == 0
    out = capsys.readouterr().out
    assert "Lighthouse layer  193.5 MiB (gathered_kv 192.0 MiB, spill 1.5 MiB) / 192.7 MiB" in out
    assert "dense layer       3.00 GiB / 6.00 GiB; holds 1.50 GiB of K/V (1 kv heads per" in out


def test_kv_heads_per_gather_stays_under_the_budget():
    from lighthouse_attn.parallel import kv_heads_per_gather

    # 2 x 1M x 128 x 2 bytes = 512 MiB per kv head
    assert kv_heads_per_gather(8, 1 << 20, 1, 128, 2) == 1
    assert kv_heads_per_gather(8, 1 << 17, 1, 128, 2) == 8  # 64 MiB a head: all at once
    assert kv_heads_per_gather(8, 1 << 18, 1, 128, 2) == 4  # 128 MiB a head
    assert kv_heads_per_gather(6, 1 << 18, 1, 128, 2) == 3  # a divisor of the kv heads
    assert kv_heads_per_gather(8, 1 << 22, 1, 128, 2) == 1  # never fewer than one
