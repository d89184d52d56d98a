"""The comparison's report: ``compare.json``, ``compare.md`` and plots, from the arms' run
directories (``metrics.jsonl`` and the cached final-model evaluations) alone, so it can be
rebuilt anywhere from copied results.

Its first line is the verdict: how much better or worse the Lighthouse-then-dense recipe's
final held-out loss is than a dense run planned to take the same time (where the comparison has
one) and than dense-from-scratch at matched tokens, paired by seed (each pair saw the same data
in the same order), with a 95% Student t interval over the seeds and a verdict word:
``better``, ``worse``, or ``not distinguishable`` when the interval covers 0.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..train.metrics import read_metrics
from .stats import LEVEL, describe_interval, mean_interval, paired_interval


def run_summary(run_dir: Path) -> dict | None:
    """What the report needs of one run, or ``None`` if it has not started."""
    records = read_metrics(run_dir / "metrics.jsonl")
    config_path = run_dir / "config.json"
    if not records or not config_path.is_file():
        return None
    train = json.loads(config_path.read_text())["train"]
    total, ls = train["lighthouse_steps"] + train["dense_steps"], train["lighthouse_steps"]
    by_step = {r["step"]: r for r in records}
    scored = [r for r in records if "val_dense" in r]
    last = records[-1]
    out = {"finished": last["step"] == total,
           "steps": last["step"], "total_steps": total, "lighthouse_steps": ls,
           "tokens": last["tokens"], "wall_s": last["elapsed_s"],
           "final_train_loss": last["loss"],
           "final_val": scored[-1]["val_dense"] if scored and scored[-1]["step"] == total
           else None,
           "curve": [{"step": r["step"], "tokens": r["tokens"], "wall_s": r["elapsed_s"],
                      "val_dense": r["val_dense"], **({"val_lighthouse": r["val_lighthouse"]}
                                                      if "val_lighthouse" in r else {})}
                     for r in scored],
           "val_s": sum(r.get("val_s", 0.0) for r in scored)}
    if 0 < ls < total and ls in by_step and ls + 1 in by_step:
        out["switch_spike"] = by_step[ls + 1]["loss"] - by_step[ls]["loss"]
    end1 = by_step.get(ls, {})
    if "val_lighthouse" in end1:
        out["stage1_val_dense"] = end1["val_dense"]
        out["stage1_val_lighthouse"] = end1["val_lighthouse"]
    stage1 = [r["tokens_per_s"] for r in records if r["stage"] == "lighthouse"]
    stage2 = [r["tokens_per_s"] for r in records if r["stage"] == "dense"]
    out["tokens_per_s"] = {k: statistics.median(v) for k, v in
                           (("lighthouse", stage1), ("dense", stage2)) if v}
    extras = run_dir / "compare_eval.json"
    if extras.is_file():
        out["final_eval"] = json.loads(extras.read_text())
    return out


def time_to_reach(run: dict, target: float) -> float | None:
    """Training seconds until the held-out loss first reaches ``target`` (None: never)."""
    for point in run["curve"]:
        if point["val_dense"] <= target:
            return point["wall_s"]
    return None


def loss_at_time(run: dict, seconds: float) -> float | None:
    """Held-out loss of ``run`` after ``seconds`` of training, interpolated linearly between
    its scored steps (None before the first score or after the last)."""
    pts = [(p["wall_s"], p["val_dense"]) for p in run["curve"]]
    for (t0, v0), (t1, v1) in zip(pts, pts[1:]):
        if t0 <= seconds <= t1:
            return v0 + (v1 - v0) * (seconds - t0) / (t1 - t0) if t1 > t0 else v1
    return None


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _sd(xs):
    xs = [x for x in xs if x is not None]
    return statistics.stdev(xs) if len(xs) > 1 else None


def _is_dense(arm: dict) -> bool:
    """A dense-from-scratch arm (of :func:`build_report`): its runs have no Lighthouse steps."""
    return bool(arm["steps"]) and arm["steps"][0] == 0


def _compare(key: str, base: str, groups: dict, runs: dict, arms: dict) -> dict | None:
    """Arm ``key`` against the dense arm ``base``, paired by seed; None without a pair."""
    pairs = []
    for seed in arms[key]["seeds_done"]:
        d_name = groups[base]["seeds"].get(seed)
        d = runs.get(d_name) if d_name else None
        if not (d and d["finished"] and d["final_val"] is not None):
            continue
        r = runs[groups[key]["seeds"][seed]]
        dense_then = loss_at_time(d, r["wall_s"])
        pairs.append({"seed": seed, "diff": r["final_val"] - d["final_val"],
                      "wall_ratio": r["wall_s"] / d["wall_s"],
                      "tokens_ratio": r["tokens"] / d["tokens"],
                      "reach_s": time_to_reach(r, d["final_val"]),
                      "dense_s": d["wall_s"],
                      "diff_equal_time": None if dense_then is None else
                      r["final_val"] - dense_then})
        _long_context_pair(pairs[-1], r, d)
    if not pairs:
        return None
    diffs = [p["diff"] for p in pairs]
    timed = [p["diff_equal_time"] for p in pairs if p["diff_equal_time"] is not None]
    interval = paired_interval(diffs)
    return {"diff_equal_time_mean": statistics.fmean(timed) if timed else None,
            "arm": key, "baseline": base, "seeds": [p["seed"] for p in pairs],
            "pairs": pairs, "n": interval["n"], "diff_mean": statistics.fmean(diffs),
            "ci_low": interval["ci_low"], "ci_high": interval["ci_high"],
            "verdict": interval["verdict"],
            "diff_min": min(diffs), "diff_max": max(diffs), "diff_sd": _sd(diffs),
            "interval_equal_time": paired_interval(timed) if timed else None,
            "long_context": _long_context_intervals(pairs),
            "planned_equal_time": arms[base].get("equal_time") == arms[key]["arm"],
            "wall_ratio_mean": statistics.fmean(p["wall_ratio"] for p in pairs),
            "tokens_ratio_mean": statistics.fmean(p["tokens_ratio"] for p in pairs),
            "steps": arms[key]["steps"], "baseline_steps": arms[base]["steps"],
            "dense_steps_range": arms[key]["dense_steps_range"],
            "baseline_dense_steps_range": arms[base]["dense_steps_range"],
            "reached": sum(p["reach_s"] is not None for p in pairs)}


def _long_context(run: dict) -> tuple[float | None, dict[str, float]]:
    """A run's long-context gain and its loss per context range (final evaluation)."""
    ev = run.get("final_eval") or {}
    gain = (ev.get("long_context") or {}).get("gain")
    return gain, {r["label"]: r["loss"] for r in ev.get("context_ranges") or []}


def _long_context_pair(pair: dict, run: dict, dense: dict) -> None:
    """Add the paired differences of the long-context metrics to ``pair`` where both runs
    have them."""
    (g_r, ranges_r), (g_d, ranges_d) = _long_context(run), _long_context(dense)
    if g_r is not None and g_d is not None:
        pair["gain_diff"] = g_r - g_d
    shared = [k for k in ranges_r if k in ranges_d]
    if shared:
        pair["range_diffs"] = {k: ranges_r[k] - ranges_d[k] for k in shared}


def _long_context_intervals(pairs: list[dict]) -> dict | None:
    """Paired intervals of the long-context gain and of each context range's loss."""
    gains = [p["gain_diff"] for p in pairs if "gain_diff" in p]
    labels = list(dict.fromkeys(k for p in pairs for k in p.get("range_diffs", {})))
    if not gains and not labels:
        return None
    return {"gain": paired_interval(gains) if gains else None,
            "ranges": {k: paired_interval([p["range_diffs"][k] for p in pairs
                                           if k in p.get("range_diffs", {})])
                       for k in labels}}


def _arm_long_context(done: dict) -> dict | None:
    """Across an arm's seeds: intervals of its long-context gain and per-range losses."""
    metrics = [_long_context(r) for r in done.values()]
    labels = list(dict.fromkeys(k for _, ranges in metrics for k in ranges))
    gains = [g for g, _ in metrics if g is not None]
    if not gains and not labels:
        return None
    return {"gain": mean_interval(gains) if gains else None,
            "ranges": {k: mean_interval([ranges[k] for _, ranges in metrics if k in ranges])
                       for k in labels}}


def build_report(runs: dict[str, dict], groups: dict[str, dict], settings: dict) -> dict:
    """``runs``: name -> :func:`run_summary`; ``groups``: ``arm-schedule`` -> ``{"arm",
    "schedule", "seeds": {seed: run name}}``. Returns the ``compare.json`` content."""
    arms = {}
    for key, g in groups.items():
        members = {s: runs.get(n) for s, n in g["seeds"].items()}
        done = {s: r for s, r in members.items() if r and r["finished"] and
                r["final_val"] is not None}
        arms[key] = {
            "arm": g["arm"], "schedule": g["schedule"], "runs": list(g["seeds"].values()),
            "seeds_done": sorted(done),
            "seeds_planned": sorted(g["seeds"]),
            "steps": next(([r["lighthouse_steps"], r["total_steps"] - r["lighthouse_steps"]]
                           for r in members.values() if r), None),
            "dense_steps_range": _range(r["total_steps"] - r["lighthouse_steps"]
                                        for r in members.values() if r),
            "final_val_mean": _mean(r["final_val"] for r in done.values()),
            "final_val_sd": _sd(r["final_val"] for r in done.values()),
            "wall_s_mean": _mean(r["wall_s"] for r in done.values()),
            "switch_spike_mean": _mean(r.get("switch_spike") for r in done.values()),
            "stage1_val_dense_mean": _mean(r.get("stage1_val_dense") for r in done.values()),
            "stage1_val_lighthouse_mean": _mean(r.get("stage1_val_lighthouse")
                                                for r in done.values()),
            "passkey_mean": _mean(r.get("final_eval", {}).get("passkey_accuracy")
                                  for r in done.values()),
            "tokens_per_s": {m: _mean(r["tokens_per_s"].get(m) for r in done.values())
                             for m in ("lighthouse", "dense")},
            "long_context": _arm_long_context(done),
            "equal_time": g.get("equal_time"),
            "equal_time_plans": g.get("plans") or {},
        }
    dense_like = [k for k, a in arms.items() if _is_dense(a)]
    comparisons = []
    for key, a in arms.items():
        if groups[key]["arm"] == "dense":
            continue
        baselines = [f"dense-{a['schedule']}"]
        if not _is_dense(a):  # also against dense runs of other lengths
            baselines += [k for k in dense_like if k not in baselines and
                          arms[k]["schedule"] == a["schedule"]]
        for base in baselines:
            if base in arms:
                c = _compare(key, base, groups, runs, arms)
                if c:
                    comparisons.append(c)
    unit = loss_unit(settings)
    return {"benchmark": "compare", "verdict": verdict(comparisons, unit), "settings": settings,
            "arms": arms, "comparisons": comparisons, "runs": runs}


_BUILTIN_NAMES = {"lighthouse": "Lighthouse then dense", "dense": "dense",
                  "causal": "Lighthouse (causal selection) then dense"}


def _range(values) -> list[int] | None:
    """``[min, max]`` of the values, None when there are none."""
    values = list(values)
    return [min(values), max(values)] if values else None


def _dense_steps(dense: int, dense_range: list[int] | None) -> str:
    """``150``, or ``244-247`` where the seeds' dense steps differ."""
    low, high = dense_range or (dense, dense)
    return f"{low}-{high}" if low != high else str(dense)


def _steps_label(arm: dict) -> str:
    """``250+150``, ``400``, or ``244-247`` where the seeds' dense steps differ."""
    if not arm.get("steps"):
        return ""
    lighthouse, dense = arm["steps"]
    dense = _dense_steps(dense, arm.get("dense_steps_range"))
    return f"{lighthouse}+{dense}" if lighthouse else dense


def _describe_arm(key: str, steps: list[int] | None = None,
                  dense_range: list[int] | None = None) -> str:
    """``lighthouse-wsd`` -> "Lighthouse then dense (wsd schedule)"; another arm's steps are
    named, since they may differ from the base run's (a range where its seeds differ, as an
    arm planned for equal time does)."""
    arm, _, schedule = key.rpartition("-")
    if arm in _BUILTIN_NAMES or not steps:
        return f"{_BUILTIN_NAMES.get(arm, f'arm {arm}')} ({schedule} schedule)"
    lighthouse, dense = steps[0], _dense_steps(steps[1], dense_range)
    if not lighthouse:
        return f"dense for {dense} steps ({arm}, {schedule} schedule)"
    return f"arm {arm} ({lighthouse} Lighthouse + {dense} dense steps, {schedule} schedule)"


def _interval(c: dict) -> dict:
    """The paired interval of a comparison, in the form :mod:`.stats` describes."""
    return {"n": c["n"], "mean": c["diff_mean"], "ci_low": c["ci_low"],
            "ci_high": c["ci_high"], "verdict": c["verdict"], "level": LEVEL}


def loss_unit(settings: dict) -> str:
    """``nats/byte`` (the byte tokenizer) or ``nats/token``, as the comparison's settings say."""
    return settings.get("loss_unit", "nats/byte")


def verdict_word(stats: dict) -> str:
    """``better``, ``worse``, ``not distinguishable``, or what one seed allows."""
    return stats["verdict"] or "one seed, no interval"


def comparison_line(c: dict, unit: str = "nats/byte") -> str:
    """One sentence: the verdict word, the paired difference with its interval, the token and
    the wall-time ratios."""
    stats = _interval(c)
    n = stats["n"]
    spread = (f"; per seed {c['diff_min']:+.3f} to {c['diff_max']:+.3f}"
              f"{', the seeds disagree in sign' if c['diff_min'] < 0 < c['diff_max'] else ''}"
              if n > 1 else "")
    tokens = c["tokens_ratio_mean"]
    matched = ("at matched tokens" if abs(tokens - 1) < 1e-9 else
               f"with {tokens:.2f}x its tokens")
    versus = ("dense" if c["baseline"].rpartition("-")[0] == "dense" else
              _describe_arm(c["baseline"], c["baseline_steps"],
                            c.get("baseline_dense_steps_range")))
    arm = _describe_arm(c["arm"], c["steps"], c.get("dense_steps_range"))
    text = (f"{arm} vs {versus} {matched}: "
            f"{verdict_word(stats)}, {describe_interval(stats, ' ' + unit)}{spread}; "
            f"{c['wall_ratio_mean']:.2f}x the wall time")
    equal = c.get("diff_equal_time_mean")
    if equal is not None and c["wall_ratio_mean"] < 1:
        text += (f"; after the same wall time the dense run (mid-course) was {abs(equal):.3f} "
                 f"{'better' if equal > 0 else 'worse'}")
    return text + "."


def _short_verdict(c: dict, unit: str = "") -> str:
    stats = _interval(c)
    return f"{verdict_word(stats)}, {describe_interval(stats, unit)}"


def verdict(comparisons: list[dict], unit: str = "nats/byte") -> str:
    """The first line of the report: the recipe (the paper's selection under the first
    schedule where it ran) against the dense run planned for its time, where there is one, and
    against dense at matched tokens, each with its interval; or why there is none yet."""
    if not comparisons:
        return ("No verdict yet: no Lighthouse arm and dense arm have both finished with "
                "held-out scores for the same seed.")
    main = next((c for c in comparisons if c["arm"].startswith("lighthouse-")
                 and c["baseline"].rpartition("-")[0] == "dense"),
                next((c for c in comparisons if c["arm"].startswith("lighthouse-")),
                     comparisons[0]))
    same_arm = [c for c in comparisons if c["arm"] == main["arm"] and c is not main]
    planned = ([c for c in same_arm if c.get("planned_equal_time")] or
               [c for c in same_arm if 0.9 <= c["wall_ratio_mean"] <= 1.1])
    if not planned:
        return comparison_line(main, unit)
    c = min(planned, key=lambda c: abs(c["wall_ratio_mean"] - 1))
    base = _describe_arm(c["baseline"], c["baseline_steps"], c.get("baseline_dense_steps_range"))
    return (f"{_describe_arm(main['arm'], main['steps'])} vs dense planned for the same time "
            f"({base}, "
            f"{c['wall_ratio_mean']:.2f}x the time): {_short_verdict(c, ' ' + unit)}. At "
            f"matched tokens vs dense ({main['wall_ratio_mean']:.2f}x the time): "
            f"{_short_verdict(main)}.")


def _fmt(x, spec=".4f", empty="-"):
    return empty if x is None else format(x, spec)


def _fmt_s(x):
    if x is None:
        return "never"
    m, s = divmod(round(x), 60)
    return f"{m}m{s:02d}s" if m else f"{x:.1f}s"


def markdown(report: dict, plots: list[str]) -> str:
    """``compare.md``: verdict, the per-arm table, the paired comparisons, the plots."""
    lines = [report["verdict"], "", "# Does Lighthouse pay off here?", ""]
    others = [comparison_line(c, loss_unit(report["settings"])) for c in report["comparisons"]]
    if len(others) > 1:
        lines += [f"- {x}" for x in others] + [""]
    s = report["settings"]
    lines += [f"Model: {s.get('model_summary', '')}. Budget per arm: {s.get('total_steps')} "
              f"steps x {s.get('tokens_per_step', 0):,} tokens. Held-out: "
              f"{s.get('eval_summary', '')}. Device: {s.get('device', '')}.", ""]
    lines += ["| arm | schedule | seeds | final held-out (dense attn) | sd | switch spike (train) "
              "| end of stage 1: dense / Lighthouse | wall time | tokens/s stage 1 / 2 "
              "| passkey |", "|---|---|---|---|---|---|---|---|---|---|"]
    for a in report["arms"].values():
        tps = a["tokens_per_s"]
        lines.append(
            f"| {a['arm']} | {a['schedule']} | {len(a['seeds_done'])}/"
            f"{len(a['seeds_planned'])} | {_fmt(a['final_val_mean'])} | "
            f"{_fmt(a['final_val_sd'])} | {_fmt(a['switch_spike_mean'], '+.3f')} | "
            f"{_fmt(a['stage1_val_dense_mean'], '.3f')} / "
            f"{_fmt(a['stage1_val_lighthouse_mean'], '.3f')} | {_fmt_s(a['wall_s_mean'])} | "
            f"{_fmt(tps.get('lighthouse'), ',.0f')} / {_fmt(tps.get('dense'), ',.0f')} | "
            f"{_fmt(None if a['passkey_mean'] is None else 100 * a['passkey_mean'], '.0f')}"
            f"{'%' if a['passkey_mean'] is not None else ''} |")
    if report["comparisons"]:
        lines += ["", "## Paired comparisons with 95% intervals (Student t over seeds)", "",
                  "| arm | vs | n | mean difference | 95% CI | verdict | tokens ratio "
                  "| wall time ratio |", "|---|---|---|---|---|---|---|---|"]
        for c in report["comparisons"]:
            st = _interval(c)
            ci = ("-" if st["ci_low"] is None else
                  f"[{st['ci_low']:+.4f}, {st['ci_high']:+.4f}]")
            lines.append(f"| {c['arm']} | {c['baseline']} | {st['n']} | {st['mean']:+.4f} | "
                         f"{ci} | {verdict_word(st)} | {c['tokens_ratio_mean']:.2f}x | "
                         f"{c['wall_ratio_mean']:.2f}x |")
    lines += _long_context_markdown(report)
    if report["comparisons"]:
        lines += ["", "## Paired by seed (arm minus dense, same data order)", "",
                  "| arm | vs | seed | held-out difference | at equal wall time | wall time ratio "
                  "| tokens ratio | reaches dense's final held-out after | dense took |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in report["comparisons"]:
            for p in c["pairs"]:
                lines.append(f"| {c['arm']} | {c['baseline']} | {p['seed']} | "
                             f"{p['diff']:+.4f} | {_fmt(p.get('diff_equal_time'), '+.4f')} | "
                             f"{p['wall_ratio']:.2f}x | {p.get('tokens_ratio', 1.0):.2f}x | "
                             f"{_fmt_s(p['reach_s'])} | "
                             f"{_fmt_s(p['dense_s'])} |")
    lines += ["", f"Held-out loss: mean {loss_unit(report['settings'])} of the final dense "
              "model on the held-out "
              "sequences. At equal wall time: the arm's final held-out loss minus the dense "
              "run's after the same training time, interpolated between its scores (a dense run "
              "in mid-course, not one planned to end there). Switch spike: training loss of the "
              "first dense step minus the last Lighthouse step. Wall time: training time only "
              "(held-out scoring excluded).", ""]
    lines += [f"![{p}]({p})" for p in plots]
    lines += ["", "## Settings", "", "```json", json.dumps(report["settings"], indent=2), "```",
              ""]
    return "\n".join(lines)


def _ci_cell(st: dict | None, spec: str = ".3f") -> str:
    if not st or st["mean"] is None:
        return "-"
    if st["ci_low"] is None:
        return format(st["mean"], spec)
    return (f"{format(st['mean'], spec)} [{format(st['ci_low'], spec)}, "
            f"{format(st['ci_high'], spec)}]")


def _long_context_markdown(report: dict) -> list[str]:
    """Per-arm loss by context range and long-context gain (mean [95% CI] over seeds), and
    the paired differences against the baselines."""
    arms = {k: a for k, a in report["arms"].items() if a.get("long_context")}
    if not arms:
        return []
    labels = list(dict.fromkeys(k for a in arms.values()
                                for k in a["long_context"]["ranges"]))
    lines = ["", "## Long context (final dense models, mean [95% CI] over seeds)", "",
             "| arm | " + " | ".join(f"loss {k}" for k in labels) + " | long-context gain |",
             "|---|" + "---|" * (len(labels) + 1)]
    for key, a in arms.items():
        lc = a["long_context"]
        lines.append(f"| {key} | " + " | ".join(_ci_cell(lc["ranges"].get(k)) for k in labels)
                     + f" | {_ci_cell(lc['gain'], '+.3f')} |")
    paired = [c for c in report["comparisons"] if c.get("long_context")]
    if paired:
        lines += ["", "Paired by seed, arm minus baseline (negative loss differences and "
                  "positive gain differences favour the arm):", "",
                  "| arm | vs | " + " | ".join(f"loss {k}" for k in labels) +
                  " | long-context gain |", "|---|---|" + "---|" * (len(labels) + 1)]
        for c in paired:
            lc = c["long_context"]
            cells = [_ci_cell(lc["ranges"].get(k), "+.3f") +
                     (f" {lc['ranges'][k]['verdict']}" if lc["ranges"].get(k, {}).get(
                         "verdict") else "") for k in labels]
            gain = lc.get("gain")
            lines.append(f"| {c['arm']} | {c['baseline']} | " + " | ".join(cells) +
                         f" | {_ci_cell(gain, '+.3f')} |")
    window = next((r["final_eval"]["long_context"]["window"] for r in report["runs"].values()
                   if r and (r.get("final_eval") or {}).get("long_context")), None)
    if window:
        lines += ["", f"Long-context gain: loss of the last {window:,} positions of each "
                  f"held-out sequence with only the {window:,} tokens before them, minus the "
                  "same with the full context; positive: the model uses distant text."]
    return lines


_COLORS = {"dense": "tab:blue", "lighthouse": "tab:orange", "causal": "tab:green"}
_STYLES = {"constant": "-", "wsd": "--", "cosine": ":", "linear": "-."}


def _style(arm: str, schedule: str, i: int) -> dict:
    import matplotlib

    extra = matplotlib.colormaps["tab10"](3 + i % 7)
    return {"color": _COLORS.get(arm, extra), "ls": _STYLES.get(schedule, "-")}


def plot_curves(report: dict, groups: dict, path: Path) -> None:
    """Held-out loss against tokens and against training wall time, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_w) = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for i, g in enumerate(groups.values()):
        runs = [report["runs"].get(n) for n in g["seeds"].values()]
        runs = [r for r in runs if r and r["curve"]]
        if not runs:
            continue
        steps = sorted(set.intersection(*({p["step"] for p in r["curve"]} for r in runs)))
        pts = [[next(p for p in r["curve"] if p["step"] == s) for r in runs] for s in steps]
        st = _style(g["arm"], g["schedule"], i)
        label = f"{g['arm']} ({g['schedule']}, {len(runs)} seed{'s' * (len(runs) > 1)})"
        for ax, x in ((ax_t, "tokens"), (ax_w, "wall_s")):
            ax.plot([statistics.fmean(p[x] for p in ps) for ps in pts],
                    [statistics.fmean(p["val_dense"] for p in ps) for ps in pts],
                    marker="o", ms=3, label=label, **st)
            lh = [(ps, [p.get("val_lighthouse") for p in ps]) for ps in pts]
            lh = [(statistics.fmean(p[x] for p in ps), statistics.fmean(v)) for ps, v in lh
                  if all(x is not None for x in v)]
            if lh:
                ax.plot(*zip(*lh), marker="x", ms=4, lw=0.8, alpha=0.6, color=st["color"],
                        ls=":")
    ax_t.set_xlabel("tokens")
    ax_w.set_xlabel("training wall time (s)")
    ax_t.set_ylabel(f"held-out loss ({loss_unit(report['settings'])})")
    ax_t.set_title("held-out loss, dense attention (x: under Lighthouse in stage 1)", fontsize=9)
    ax_w.set_title("the same against training wall time", fontsize=9)
    fig.suptitle(report["verdict"], fontsize=9, wrap=True)
    for ax in (ax_t, ax_w):
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=8)
    lows = [p["val_dense"] for r in report["runs"].values() if r for p in r["curve"]]
    if len(lows) > 3:
        low, q = min(lows), statistics.quantiles(lows, n=4)[2]
        ax_t.set_ylim(low - 0.1 * (q - low) - 0.01, q + 0.1 * (q - low) + 0.01)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_final(report: dict, path: Path) -> None:
    """Final held-out loss per arm and schedule: mean bar, one dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k, a in report["arms"].items() if a["final_val_mean"] is not None]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(keys) + 2), 4))
    for i, key in enumerate(keys):
        a = report["arms"][key]
        st = _style(a["arm"], a["schedule"], i)
        ax.bar(i, a["final_val_mean"], color=st["color"], alpha=0.5)
        vals = [report["runs"][n]["final_val"] for n in a["runs"]
                if report["runs"].get(n) and report["runs"][n]["final_val"] is not None]
        ax.plot([i] * len(vals), vals, "ko", ms=4)
    ax.set_xticks(range(len(keys)), keys, rotation=20, fontsize=8)
    if keys:
        vals = [report["arms"][k]["final_val_mean"] for k in keys]
        ax.set_ylim(min(vals) - 0.15, max(vals) + 0.1)
    ax.set_ylabel(f"final held-out loss ({loss_unit(report['settings'])})")
    ax.set_title("final dense model on held-out text (bars: mean; dots: seeds)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_positions(report: dict, path: Path) -> bool:
    """Held-out loss by position bucket of each arm's final models (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for key, a in report["arms"].items():
        buckets = [(report["runs"].get(n) or {}).get("final_eval", {}).get("position_buckets")
                   for n in a["runs"]]
        if any(buckets):
            series[key] = (a, [b for b in buckets if b])
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (key, (a, runs)) in enumerate(series.items()):
        arm, schedule = a["arm"], a["schedule"]
        xs = [b["end"] - 1 for b in runs[0]]
        ys = [statistics.fmean(r[j]["loss"] for r in runs) for j in range(len(xs))]
        ax.plot(xs, ys, marker="o", ms=3, label=key, **_style(arm, schedule, i))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("token position (bucket end)")
    ax.set_ylabel(f"held-out loss ({loss_unit(report['settings'])})")
    ax.set_title("final dense models: loss by position", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_frontier(report: dict, path: Path) -> None:
    """Final held-out loss against training wall time, one point per arm (mean over seeds,
    dots: seeds); dense arms of one schedule joined by a line: what dense buys per second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    done = {k: a for k, a in report["arms"].items() if a["final_val_mean"] is not None}
    dense = {k for k, a in done.items() if _is_dense(a)}
    for schedule in sorted({a["schedule"] for a in done.values()}):
        line = sorted((a["wall_s_mean"], a["final_val_mean"]) for k, a in done.items()
                      if k in dense and a["schedule"] == schedule)
        if len(line) > 1:
            ax.plot(*zip(*line), color="tab:blue", ls=_STYLES.get(schedule, "-"), lw=1,
                    alpha=0.7, label=f"dense runs of different lengths ({schedule})")
    for i, (key, a) in enumerate(done.items()):
        st = _style(a["arm"], a["schedule"], i)
        runs = [report["runs"][n] for n in a["runs"] if report["runs"].get(n)
                and report["runs"][n]["final_val"] is not None]
        ax.plot([r["wall_s"] for r in runs], [r["final_val"] for r in runs], "o",
                color=st["color"], ms=3, alpha=0.5)
        ax.plot(a["wall_s_mean"], a["final_val_mean"], "D", color=st["color"], ms=7)
        steps = _steps_label(a)
        ax.annotate(f"{key} ({steps})" if steps else key, (a["wall_s_mean"],
                    a["final_val_mean"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel(f"final held-out loss ({loss_unit(report['settings'])})")
    ax.set_title("what each recipe buys for its time (lower left is better; diamonds: mean, "
                 "dots: seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
