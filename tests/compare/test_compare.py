"""`lighthouse-attn compare` end to end on the demo preset (CPU), its arms and its errors."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "train"))
from train_helpers import make_corpus, metrics  # noqa: E402

from lighthouse_attn.cli import main
from lighthouse_attn.compare.arms import parse_arm
from lighthouse_attn.compare.report import (
    build_report,
    comparison_line,
    loss_at_time,
    time_to_reach,
    verdict,
)
from lighthouse_attn.compare.stats import paired_interval


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    held = d / "held_out"
    held.mkdir()
    (held / "other.py").write_text("".join(f"total_{i} = add({i}, {i * 3 % 11})  # sum\n"
                                           for i in range(600)))
    return make_corpus(d, 120_000), str(held)


def _args(data, out, *extra):
    corpus, held = data
    return ["compare", "--data", corpus, "--eval-data", held, "--lighthouse-steps", "4",
            "--dense-steps", "2", "--warmup-steps", "1", "--eval-every", "3",
            "--eval-sequences", "1", "--passkey-trials", "1", "--threads", "2",
            "--no-progress", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def compared(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("cmp") / "c"
    assert main(_args(data, out, "--arms", "dense,lighthouse,causal", "--schedules",
                      "constant,wsd", "--seeds", "0,1")) == 0
    return out


def test_report_files_and_verdict(compared):
    text = (compared / "compare.md").read_text()
    first = text.splitlines()[0]
    assert first.startswith("Lighthouse then dense (constant schedule) vs dense at matched "
                            "tokens: ")
    assert "nats/byte [95% CI " in first and "], n=2" in first and "x the wall time" in first
    assert any(w in first for w in ("better", "worse", "not distinguishable"))
    assert "causal selection" in text
    report = json.loads((compared / "compare.json").read_text())
    assert report["verdict"] == first
    assert set(report["arms"]) == {f"{a}-{s}" for a in ("dense", "lighthouse", "causal")
                                   for s in ("constant", "wsd")}
    assert all(a["seeds_done"] == [0, 1] for a in report["arms"].values())
    c = next(c for c in report["comparisons"] if c["arm"] == "lighthouse-constant")
    runs = report["runs"]
    diffs = [runs[f"lighthouse-constant-s{s}"]["final_val"] -
             runs[f"dense-constant-s{s}"]["final_val"] for s in (0, 1)]
    assert c["diff_mean"] == pytest.approx(sum(diffs) / 2)
    lh = runs["lighthouse-constant-s0"]
    assert "switch_spike" in lh and "stage1_val_lighthouse" in lh
    assert 0 <= lh["final_eval"]["passkey_accuracy"] <= 1
    assert lh["final_eval"]["position_buckets"][-1]["end"] == 2049
    for name in ("compare_curves.png", "compare_final.png", "compare_position.png"):
        assert (compared / name).stat().st_size > 10_000
    log = (compared / "runs" / "dense-constant-s0" / "train.log").read_text().splitlines()
    assert "started" in log[0] and "resumed" not in log[0]  # a new arm is no restart


def test_paired_seeds_see_the_same_data(compared):
    """One seed means one initialisation and one data order in every arm: the dense arms of
    the two schedules agree up to the decay, and another seed differs from the first step."""
    a = metrics(compared / "runs" / "dense-constant-s0")
    b = metrics(compared / "runs" / "dense-wsd-s0")
    assert [r["loss"] for r in a[:4]] == [r["loss"] for r in b[:4]]
    c = metrics(compared / "runs" / "dense-constant-s1")
    assert a[0]["loss"] != c[0]["loss"]


def test_wsd_branch_equals_a_run_from_scratch(compared, data, tmp_path):
    """A branched wsd arm continues exactly as a wsd run from step 0 would."""
    out = tmp_path / "nb"
    assert main(_args(data, out, "--arms", "dense", "--schedules", "constant,wsd", "--seeds",
                      "0", "--no-branch", "--passkey-trials", "0")) == 0
    branched = metrics(compared / "runs" / "dense-wsd-s0")
    scratch = metrics(out / "runs" / "dense-wsd-s0")
    assert [r["lr"] for r in branched] == [r["lr"] for r in scratch]
    assert [r["loss"] for r in branched] == pytest.approx([r["loss"] for r in scratch],
                                                          rel=1e-6)
    assert "branched from" in (compared / "runs" / "dense-wsd-s0" / "train.log").read_text()


def test_rerun_skips_finished_arms_and_report_only(compared, data, capsys):
    capsys.readouterr()
    assert main(_args(data, compared, "--arms", "dense,lighthouse,causal", "--schedules",
                      "constant,wsd", "--seeds", "0,1")) == 0
    out = capsys.readouterr().out
    assert out.count(": done") == 12 and ": start" not in out
    assert main(_args(data, compared, "--arms", "dense,lighthouse,causal", "--schedules",
                      "constant,wsd", "--seeds", "0,1", "--report-only")) == 0


def test_changed_settings_in_the_same_out_are_refused(compared, data, capsys):
    assert main(_args(data, compared, "--arms", "dense,lighthouse,causal", "--schedules",
                      "constant,wsd", "--seeds", "0,1", "--lr", "0.001")) == 2
    assert "holds a run with other settings (train.lr)" in capsys.readouterr().err


@pytest.mark.parametrize("extra,match", [
    (["--arms", "lighthouse"], "needs the dense arm"),
    (["--arms", "dense,fast"], "unknown arm 'fast'"),
    (["--arm", "x:nope=1"], "unknown setting 'nope'"),
    (["--arm", "x:topk=100"], "topk must be a positive multiple of 128"),
    (["--schedules", "constant,sometimes"], "unknown schedule 'sometimes'"),
    (["--seeds", "0,0"], "distinct"),
    (["--schedules", "constant", "--decay-steps", "2"], "add wsd to --schedules"),
    (["--run-dir", "x"], "drop --run-dir"),
])
def test_bad_input_is_a_one_line_error(data, tmp_path, capsys, extra, match):
    assert main(_args(data, tmp_path / "bad", *extra)) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1


def test_eval_data_is_required(data, tmp_path, capsys):
    assert main(["compare", "--data", data[0], "--out", str(tmp_path / "x")]) == 2
    assert "--eval-data" in capsys.readouterr().err


def test_arm_parsing():
    assert parse_arm("dense").changes == {"lighthouse_steps": 0}
    arm = parse_arm("early:lighthouse_steps=100,topk=1024,selection=causal")
    assert arm.changes == {"lighthouse_steps": 100, "topk": 1024, "selection": "causal"}
    assert parse_arm("dl:dense_layers=0;-1").changes == {"dense_layers": (0, -1)}
    with pytest.raises(ValueError, match="key=value"):
        parse_arm("x:topk")


def test_time_to_reach_and_empty_verdict():
    run = {"curve": [{"val_dense": 3.0, "wall_s": 1.0}, {"val_dense": 2.0, "wall_s": 2.0}]}
    assert time_to_reach(run, 2.5) == 2.0 and time_to_reach(run, 1.0) is None
    assert loss_at_time(run, 1.5) == pytest.approx(2.5) and loss_at_time(run, 3.0) is None
    assert verdict([]).startswith("No verdict yet")
    empty = build_report({}, {"dense-constant": {"arm": "dense", "schedule": "constant",
                                                  "seeds": {0: "dense-constant-s0"}}}, {})
    assert empty["comparisons"] == [] and empty["arms"]["dense-constant"]["seeds_done"] == []


def test_parallel_jobs_match_sequential(compared, data, tmp_path):
    """--jobs 2 trains arms as two `train --resume` processes: the same runs as in-process."""
    out = tmp_path / "par"
    assert main(_args(data, out, "--arms", "dense,lighthouse", "--schedules", "constant",
                      "--seeds", "0", "--jobs", "2", "--passkey-trials", "0")) == 0
    for name in ("dense-constant-s0", "lighthouse-constant-s0"):
        par = [r["loss"] for r in metrics(out / "runs" / name)]
        seq = [r["loss"] for r in metrics(compared / "runs" / name)]
        assert par == pytest.approx(seq, rel=1e-6)


def test_report_only_keeps_where_the_runs_ran(compared, data):
    path = compared / "compare.json"
    report = json.loads(path.read_text())
    report["settings"]["device"] = "NVIDIA H200"
    del report["settings"]["transformers"]
    path.write_text(json.dumps(report))
    assert main(_args(data, compared, "--arms", "dense,lighthouse,causal", "--schedules",
                      "constant,wsd", "--seeds", "0,1", "--report-only")) == 0
    settings = json.loads(path.read_text())["settings"]
    assert settings["device"] == "NVIDIA H200" and "transformers" not in settings


def test_copied_runs_without_weights_count_and_dense_of_another_length(compared, data,
                                                                        tmp_path, capsys):
    """Results copied without their weights (metrics, config, cached final evaluation) are
    finished arms wherever they lie; a dense arm of another length is a second baseline."""
    import shutil

    out = tmp_path / "moved"
    for name in ("dense-wsd-s0", "lighthouse-wsd-s0"):
        shutil.copytree(compared / "runs" / name, out / "runs" / name,
                        ignore=shutil.ignore_patterns("final", "checkpoints"))
    capsys.readouterr()
    assert main(_args(data, out, "--arms", "dense,lighthouse", "--schedules", "wsd",
                      "--seeds", "0", "--arm", "short:lighthouse_steps=0,dense_steps=4")) == 0
    text = capsys.readouterr().out
    assert "dense-wsd-s0: done" in text and "lighthouse-wsd-s0: done" in text
    assert "short-wsd-s0: start" in text
    report = json.loads((out / "compare.json").read_text())
    pairs = {(c["arm"], c["baseline"]): c for c in report["comparisons"]}
    assert set(pairs) == {("lighthouse-wsd", "dense-wsd"), ("lighthouse-wsd", "short-wsd"),
                          ("short-wsd", "dense-wsd")}
    c = pairs["lighthouse-wsd", "short-wsd"]
    assert c["tokens_ratio_mean"] == pytest.approx(6 / 4) and c["baseline_steps"] == [0, 4]
    md = (out / "compare.md").read_text()
    assert "vs dense for 4 steps (short, wsd schedule) with 1.50x its tokens: one seed, no " \
        "interval" in md
    assert "vs dense at matched tokens" in md
    assert (out / "compare_frontier.png").stat().st_size > 10_000


def test_moved_run_with_other_evaluation_settings_is_a_one_line_error(compared, data,
                                                                      tmp_path, capsys):
    import shutil

    out = tmp_path / "moved2"
    shutil.copytree(compared / "runs" / "dense-wsd-s0", out / "runs" / "dense-wsd-s0",
                    ignore=shutil.ignore_patterns("final", "checkpoints"))
    assert main(_args(data, out, "--arms", "dense", "--schedules", "wsd", "--seeds", "0",
                      "--passkey-trials", "2")) == 2
    err = capsys.readouterr().err
    assert "keeps no weights" in err and len(err.strip().splitlines()) == 1


def test_verdict_names_the_dense_run_planned_for_the_same_time():
    def comp(arm, base, diffs, wall, steps, planned=False):
        st = paired_interval(diffs)
        return {"arm": arm, "baseline": base, "seeds": list(range(len(diffs))),
                "pairs": [{"diff": d} for d in diffs], "diff_mean": sum(diffs) / len(diffs),
                "n": st["n"], "ci_low": st["ci_low"], "ci_high": st["ci_high"],
                "verdict": st["verdict"],
                "diff_min": min(diffs), "diff_max": max(diffs), "wall_ratio_mean": wall,
                "tokens_ratio_mean": 400 / sum(steps), "steps": [250, 150],
                "baseline_steps": steps, "diff_equal_time_mean": None,
                "planned_equal_time": planned}

    text = verdict([comp("lighthouse-wsd", "dense-wsd", [0.06], 0.71, [0, 400]),
                    comp("lighthouse-wsd", "dshort-wsd", [-0.02], 0.98, [0, 285])])
    assert text == ("Lighthouse then dense (wsd schedule) vs dense planned for the same time "
                    "(dense for 285 steps (dshort, wsd schedule), 0.98x the time): one seed, no "
                    "interval, -0.020 nats/byte (n=1: one seed, no interval). At matched tokens "
                    "vs dense (0.71x the time): one seed, no interval, +0.060 (n=1: one seed, "
                    "no interval).")
    # the arm planned with equal_time wins over one that merely took about as long
    text = verdict([comp("lighthouse-wsd", "dense-wsd", [0.173, 0.094, 0.05], 0.71, [0, 400]),
                    comp("lighthouse-wsd", "near-wsd", [0.3, 0.2], 1.0, [0, 280]),
                    comp("lighthouse-wsd", "dshort-wsd", [-0.103, -0.039, -0.008, -0.031],
                         0.95, [0, 285], planned=True)])
    assert text.startswith("Lighthouse then dense (wsd schedule) vs dense planned for the same "
                           "time (dense for 285 steps (dshort, wsd schedule), 0.95x the time): "
                           "not distinguishable, -0.045 nats/byte [95% CI -0.110, +0.019], "
                           "n=4.")
    assert ("At matched tokens vs dense (0.71x the time): not distinguishable, +0.106 [95% CI"
            in text)
    assert "planned" not in verdict([comp("lighthouse-wsd", "dense-wsd", [0.06], 0.71, [0, 400]),
                                     comp("lighthouse-wsd", "x-wsd", [0.1], 0.5, [0, 100])])
    line = comparison_line(comp("lighthouse-wsd", "dense-wsd", [-0.02, 0.04], 0.71, [0, 400]))
    assert "per seed -0.020 to +0.040, the seeds disagree in sign" in line
    assert "disagree" not in comparison_line(comp("lighthouse-wsd", "dense-wsd", [0.02, 0.04],
                                                  0.71, [0, 400]))
    # a run with a tokenizer file reports per token
    tokens = [comp("lighthouse-wsd", "dense-wsd", [0.06], 0.71, [0, 400]),
              comp("lighthouse-wsd", "dshort-wsd", [-0.02], 0.98, [0, 285])]
    assert "-0.020 nats/token" in verdict(tokens, "nats/token")
    assert "nats/token" in comparison_line(tokens[0], "nats/token")


def _retime(path, per_step: float) -> None:
    """Give a run's logged steps fixed times (1 s of start-up, then ``per_step`` s a step), so
    that a plan made from them does not depend on how loaded the machine was."""
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    for r in lines:
        if "elapsed_s" in r:
            r["elapsed_s"] = 1.0 + per_step * r["step"]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_equal_time_arm_plans_itself(compared, data, tmp_path, capsys):
    """`--arm dshort:equal_time=lighthouse` trains dense for the steps that end when the
    recipe ended, planned from the finished runs' step times, recorded in its run directory and
    the report, reused on the next run, and named in the verdict."""
    import shutil

    from lighthouse_attn.compare.equal_time import PLAN_FILE, plan_steps

    out = tmp_path / "eq"
    for name, per_step in (("dense-wsd-s0", 0.5), ("lighthouse-wsd-s0", 0.3)):
        shutil.copytree(compared / "runs" / name, out / "runs" / name,
                        ignore=shutil.ignore_patterns("final", "checkpoints"))
        _retime(out / "runs" / name / "metrics.jsonl", per_step)
    args = _args(data, out, "--arms", "dense,lighthouse", "--schedules", "wsd", "--seeds", "0",
                 "--arm", "dshort:equal_time=lighthouse")
    capsys.readouterr()
    assert main(args) == 0
    text = capsys.readouterr().out
    expected = plan_steps(out / "runs" / "lighthouse-wsd-s0", out / "runs" / "dense-wsd-s0")
    assert f"dshort-wsd-s0: planned {expected['steps']} dense steps" in text
    run = out / "runs" / "dshort-wsd-s0"
    plan = json.loads((run / PLAN_FILE).read_text())
    assert plan == json.loads(json.dumps(expected))
    config = json.loads((run / "config.json").read_text())["train"]
    assert (config["lighthouse_steps"], config["dense_steps"]) == (0, plan["steps"])
    assert metrics(run)[-1]["step"] == plan["steps"]
    report = json.loads((out / "compare.json").read_text())
    assert report["arms"]["dshort-wsd"]["equal_time"] == "lighthouse"
    assert report["arms"]["dshort-wsd"]["equal_time_plans"]["0"]["steps"] == plan["steps"]
    assert report["verdict"].startswith("Lighthouse then dense (wsd schedule) vs dense planned "
                                        f"for the same time (dense for {plan['steps']} steps "
                                        "(dshort, wsd schedule)")
    # the next phase reuses the plan: nothing is planned or trained again
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "dense steps to end with" not in text and "dshort-wsd-s0: done" in text


@pytest.mark.parametrize("arm,match", [
    ("x:equal_time=dense", "must name a Lighthouse arm"),
    ("x:equal_time=nothere", "must name a Lighthouse arm"),
    ("x:equal_time=lighthouse,dense_steps=3", "plans the number of dense steps itself"),
    ("x:equal_time=a b", "equal_time names the Lighthouse arm"),
])
def test_equal_time_arm_errors(data, tmp_path, capsys, arm, match):
    assert main(_args(data, tmp_path / "o", "--arms", "dense,lighthouse", "--arm", arm)) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_equal_time_plan_needs_finished_runs(tmp_path):
    from lighthouse_attn.compare.equal_time import plan_steps

    with pytest.raises(ValueError, match="has not run"):
        plan_steps(tmp_path / "a", tmp_path / "b")


def test_a_signal_stops_the_comparison_after_evaluating_finished_arms(data, tmp_path,
                                                                      monkeypatch, capsys):
    """SIGTERM in an arm stops the whole comparison (no later arm starts), with exit 143 and
    one line; arms that finished before it already have their final evaluation."""
    from types import SimpleNamespace

    import lighthouse_attn.compare.runner as runner

    real, started = runner.train, []

    def train(run, model, **kw):
        started.append(run.run_dir)
        if len(started) == 2:
            return SimpleNamespace(status="interrupted", interrupted_by="SIGTERM")
        return real(run, model, **kw)

    monkeypatch.setattr(runner, "train", train)
    out = tmp_path / "sig"
    assert main(_args(data, out, "--arms", "dense,lighthouse,causal", "--schedules",
                      "constant", "--seeds", "0", "--passkey-trials", "0")) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["compare: SIGTERM while training lighthouse-constant-s0: its checkpoint is "
                   "written; run the same command again to resume the comparison"]
    assert len(started) == 2 and not (out / "runs" / "causal-constant-s0").exists()
    assert (out / "runs" / "dense-constant-s0" / "compare_eval.json").is_file()
