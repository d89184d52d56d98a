"""Confidence intervals of `compare`: Student t quantiles, paired intervals on synthetic run
directories whose differences are known exactly, the verdict words, and the long-context
metrics with their intervals."""

import json
import math

import pytest

from lighthouse_attn.compare.report import _steps_label, build_report, markdown, run_summary
from lighthouse_attn.compare.stats import (
    describe_interval,
    mean_interval,
    paired_interval,
    t_quantile,
)


@pytest.mark.parametrize("df,expected", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764),
                                         (9, 2.2622), (29, 2.0452)])
def test_t_quantiles(df, expected):
    assert t_quantile(df) == pytest.approx(expected, abs=1e-4)


def test_paired_interval_and_verdict_words():
    # the 32K equal-time differences of four seeds: mean -0.045, [-0.110, +0.019]
    st = paired_interval([-0.103, -0.039, -0.008, -0.031])
    assert st["n"] == 4 and st["mean"] == pytest.approx(-0.04525)
    assert st["ci_low"] == pytest.approx(-0.1100, abs=5e-4)
    assert st["ci_high"] == pytest.approx(0.0195, abs=5e-4)
    assert st["verdict"] == "not distinguishable"
    assert describe_interval(st) == "-0.045 [95% CI -0.110, +0.019], n=4"
    assert paired_interval([-0.1, -0.12, -0.09])["verdict"] == "better"
    assert paired_interval([0.1, 0.12, 0.09])["verdict"] == "worse"
    one = paired_interval([0.2])
    assert one["verdict"] is None and one["ci_low"] is None and one["mean"] == 0.2
    assert describe_interval(one) == "+0.200 (n=1: one seed, no interval)"
    # the half-width is t * sd / sqrt(n), by hand
    st = mean_interval([1.0, 2.0, 4.0])
    sd = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert st["ci_high"] - st["mean"] == pytest.approx(t_quantile(2) * sd / math.sqrt(3))


def _run(path, lighthouse_steps, total, final_val, wall_s, gain=None, ranges=None):
    """A finished run directory as compare leaves it after copying (no weights)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"train": {
        "lighthouse_steps": lighthouse_steps, "dense_steps": total - lighthouse_steps},
        "model": {}}))
    records = []
    for step in range(1, total + 1):
        stage = "lighthouse" if step <= lighthouse_steps else "dense"
        r = {"step": step, "stage": stage, "loss": 3.0, "tokens": 100 * step,
             "tokens_per_s": 1000.0, "elapsed_s": wall_s * step / total}
        if step == total:
            r["val_dense"] = final_val
        records.append(r)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if gain is not None:
        (path / "compare_eval.json").write_text(json.dumps({
            "settings": {}, "long_context": {"window": 2048, "gain": gain},
            "context_ranges": [{"label": k, "start": 1, "end": 2, "loss": v}
                               for k, v in ranges.items()]}))
    return path


def _report(tmp_path, dense_vals, lh_diffs, planned_diffs=None, with_long_context=True,
            planned_steps=None):
    runs, groups = {}, {}
    arms = {"dense": (0, 10, 10.0), "lighthouse": (6, 10, 7.0)}
    if planned_diffs is not None:
        arms["dshort"] = (0, 7, 7.0)
    for arm, (ls, total, wall) in arms.items():
        key = f"{arm}-wsd"
        groups[key] = {"arm": arm, "schedule": "wsd", "seeds": {}}
        if arm == "dshort":
            groups[key]["equal_time"] = "lighthouse"
        for seed, base in enumerate(dense_vals):
            val = {"dense": base, "lighthouse": base + lh_diffs[seed],
                   "dshort": base + lh_diffs[seed] - (planned_diffs or [0] * 9)[seed]}[arm]
            gain = {"dense": 0.10, "lighthouse": 0.10 + 0.01 * (seed + 1),
                    "dshort": 0.05}[arm] if with_long_context else None
            ranges = {"0-2K": val + 0.5, "2K-end": val - 0.1 * seed}
            name = f"{key}-s{seed}"
            groups[key]["seeds"][seed] = name
            steps = planned_steps[seed] if arm == "dshort" and planned_steps else total
            runs[name] = run_summary(_run(tmp_path / name, ls, steps, val, wall, gain, ranges))
    return build_report(runs, groups, {})


def test_intervals_on_synthetic_runs(tmp_path):
    diffs = [0.173, 0.094, 0.120, 0.060]
    planned = [-0.103, -0.039, -0.008, -0.031]  # recipe minus the planned dense run
    report = _report(tmp_path, [2.0, 2.1, 2.05, 1.98], diffs, planned)
    pairs = {(c["arm"], c["baseline"]): c for c in report["comparisons"]}
    c = pairs["lighthouse-wsd", "dense-wsd"]
    expected = paired_interval(diffs)
    assert c["n"] == 4 and c["diff_mean"] == pytest.approx(sum(diffs) / 4)
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((expected["ci_low"],
                                                         expected["ci_high"]))
    assert c["verdict"] == "worse" and not c["planned_equal_time"]
    p = pairs["lighthouse-wsd", "dshort-wsd"]
    assert p["planned_equal_time"] and p["verdict"] == "not distinguishable"
    assert p["ci_low"] == pytest.approx(-0.1100, abs=5e-4)
    first = markdown(report, []).splitlines()[0]
    assert first == report["verdict"]
    assert first.startswith("Lighthouse then dense (wsd schedule) vs dense planned for the same "
                            "time (dense for 7 steps (dshort, wsd schedule), 1.00x the time): "
                            "not distinguishable, -0.045 nats/byte [95% CI -0.110, +0.019], "
                            "n=4.")
    assert "At matched tokens vs dense (0.70x the time): worse, +0.112 [95% CI" in first
    # long-context metrics: the gain differences are 0.01 * (seed + 1) exactly
    lc = c["long_context"]
    assert lc["gain"]["n"] == 4 and lc["gain"]["mean"] == pytest.approx(0.025)
    assert lc["gain"]["ci_low"] > 0
    assert lc["ranges"]["0-2K"]["mean"] == pytest.approx(sum(diffs) / 4)
    arm = report["arms"]["lighthouse-wsd"]["long_context"]
    assert arm["gain"]["mean"] == pytest.approx(0.125) and arm["gain"]["n"] == 4
    md = markdown(report, [])
    assert "## Paired comparisons with 95% intervals" in md
    assert "## Long context" in md and "long-context gain" in md
    assert "| lighthouse-wsd | dense-wsd | 4 | +0.1118 | [" in md
    assert json.loads(json.dumps(report)) == report  # compare.json carries the same numbers


def test_one_seed_gives_no_interval_and_says_so(tmp_path):
    report = _report(tmp_path, [2.0], [0.05], with_long_context=False)
    c = report["comparisons"][0]
    assert c["n"] == 1 and c["ci_low"] is None and c["verdict"] is None
    assert c["long_context"] is None
    assert report["verdict"] == ("Lighthouse then dense (wsd schedule) vs dense at matched "
                                 "tokens: one seed, no interval, +0.050 nats/byte (n=1: one "
                                 "seed, no interval); 0.70x the wall time.")
    md = markdown(report, [])
    assert "| lighthouse-wsd | dense-wsd | 1 | +0.0500 | - | one seed, no interval |" in md
    assert "## Long context" not in md


def test_planned_steps_that_differ_by_seed_are_named_as_a_range(tmp_path):
    """An arm planned for equal time plans its steps per seed; the verdict, the comparison
    lines and the plot's label name the range, not the first seed's count."""
    report = _report(tmp_path, [2.0, 2.1, 2.05], [0.1, 0.05, 0.08], [-0.2, -0.15, -0.19],
                     planned_steps=[7, 5, 6])
    assert report["arms"]["dshort-wsd"]["dense_steps_range"] == [5, 7]
    assert "(dense for 5-7 steps (dshort, wsd schedule)," in report["verdict"]
    assert "dense for 5-7 steps (dshort" in markdown(report, [])
    assert _steps_label(report["arms"]["dshort-wsd"]) == "5-7"
    assert _steps_label(report["arms"]["lighthouse-wsd"]) == "6+4"
    assert _steps_label(report["arms"]["dense-wsd"]) == "10"
