"""The comparison's report: ``compare.json``, ``compare.md`` and plots, from the arms' run
directories (``metrics.jsonl`` and the cached final-model evaluations) alone, so it can be
rebuilt anywhere from copied results.

Its first line is the verdict: how much better or worse the Lighthouse-then-dense recipe's
final held-out loss is than dense-from-scratch's at matched tokens (paired by seed: each pair
saw the same data in the same order), and in how much of the wall time.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..train.metrics import read_metrics


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
    if not pairs:
        return None
    diffs = [p["diff"] for p in pairs]
    timed = [p["diff_equal_time"] for p in pairs if p["diff_equal_time"] is not None]
    return {"diff_equal_time_mean": statistics.fmean(timed) if timed else None,
            "arm": key, "baseline": base, "seeds": [p["seed"] for p in pairs],
            "pairs": pairs, "diff_mean": statistics.fmean(diffs),
            "diff_min": min(diffs), "diff_max": max(diffs), "diff_sd": _sd(diffs),
            "wall_ratio_mean": statistics.fmean(p["wall_ratio"] for p in pairs),
            "tokens_ratio_mean": statistics.fmean(p["tokens_ratio"] for p in pairs),
            "steps": arms[key]["steps"], "baseline_steps": arms[base]["steps"],
            "reached": sum(p["reach_s"] is not None for p in pairs)}


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
    return {"benchmark": "compare", "verdict": verdict(comparisons), "settings": settings,
            "arms": arms, "comparisons": comparisons, "runs": runs}


_BUILTIN_NAMES = {"lighthouse": "Lighthouse then dense", "dense": "dense",
                  "causal": "Lighthouse (causal selection) then dense"}


def _describe_arm(key: str, steps: list[int] | None = None) -> str:
    """``lighthouse-wsd`` -> "Lighthouse then dense (wsd schedule)"; another arm's steps are
    named, since they may differ from the base run's."""
    arm, _, schedule = key.rpartition("-")
    if arm in _BUILTIN_NAMES or not steps:
        return f"{_BUILTIN_NAMES.get(arm, f'arm {arm}')} ({schedule} schedule)"
    lighthouse, dense = steps
    if not lighthouse:
        return f"dense for {dense} steps ({arm}, {schedule} schedule)"
    return f"arm {arm} ({lighthouse} Lighthouse + {dense} dense steps, {schedule} schedule)"


def comparison_line(c: dict) -> str:
    """One sentence: the paired difference, the token and the wall-time ratios."""
    word = "worse" if c["diff_mean"] > 0 else "better"
    n = len(c["seeds"])
    spread = (f" (per seed {c['diff_min']:+.3f} to {c['diff_max']:+.3f}"
              f"{'; the seeds disagree in sign' if c['diff_min'] < 0 < c['diff_max'] else ''})"
              if n > 1 else "")
    tokens = c["tokens_ratio_mean"]
    matched = ("at matched tokens" if abs(tokens - 1) < 1e-9 else
               f"with {tokens:.2f}x its tokens")
    versus = ("dense" if c["baseline"].rpartition("-")[0] == "dense" else
              _describe_arm(c["baseline"], c["baseline_steps"]))
    text = (f"{_describe_arm(c['arm'], c['steps'])} is {abs(c['diff_mean']):.3f} "
            f"nats/byte {word} than {versus} {matched}{spread}, in "
            f"{c['wall_ratio_mean']:.2f}x the wall time ({n} seed{'s' if n != 1 else ''})")
    equal = c.get("diff_equal_time_mean")
    if equal is not None and c["wall_ratio_mean"] < 1:
        text += (f"; after the same wall time the dense run (mid-course) was {abs(equal):.3f} "
                 f"{'better' if equal > 0 else 'worse'}")
    return text + "."


def verdict(comparisons: list[dict]) -> str:
    """The first line of the report: the recipe's headline comparison (the paper's selection
    under the first schedule where it ran), or why there is none yet."""
    if not comparisons:
        return ("No verdict yet: no Lighthouse arm and dense arm have both finished with "
                "held-out scores for the same seed.")
    main = next((c for c in comparisons if c["arm"].startswith("lighthouse-")), comparisons[0])
    text = comparison_line(main)
    planned = [c for c in comparisons if c["arm"] == main["arm"] and c is not main
               and 0.9 <= c["wall_ratio_mean"] <= 1.1]
    if planned:  # the question of time: a dense run planned to end as soon
        c = min(planned, key=lambda c: abs(c["wall_ratio_mean"] - 1))
        text += (f" Against {_describe_arm(c['baseline'], c['baseline_steps'])}, planned to "
                 f"take about as long ({c['wall_ratio_mean']:.2f}x), it is "
                 f"{abs(c['diff_mean']):.3f} {'worse' if c['diff_mean'] > 0 else 'better'}.")
    return text


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
    others = [comparison_line(c) for c in report["comparisons"]]
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
    lines += ["", "Held-out loss: mean nats/byte of the final dense model on the held-out "
              "sequences. At equal wall time: the arm's final held-out loss minus the dense "
              "run's after the same training time, interpolated between its scores (a dense run "
              "in mid-course, not one planned to end there). Switch spike: training loss of the "
              "first dense step minus the last Lighthouse step. Wall time: training time only "
              "(held-out scoring excluded).", ""]
    lines += [f"![{p}]({p})" for p in plots]
    lines += ["", "## Settings", "", "```json", json.dumps(report["settings"], indent=2), "```",
              ""]
    return "\n".join(lines)


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
    ax_t.set_ylabel("held-out loss (nats/byte)")
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
    ax.set_ylabel("final held-out loss (nats/byte)")
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
    ax.set_ylabel("held-out loss (nats/byte)")
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
        steps = "+".join(str(x) for x in a["steps"] if x) if a.get("steps") else ""
        ax.annotate(f"{key} ({steps})" if steps else key, (a["wall_s_mean"],
                    a["final_val_mean"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("final held-out loss (nats/byte)")
    ax.set_title("what each recipe buys for its time (lower left is better; diamonds: mean, "
                 "dots: seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
