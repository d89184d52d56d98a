"""The recipe ablations' table: every variant against the paper's recipe (``lighthouse``) and
against dense planned for the recipe's time (``dshort``), paired by seed, with 95% Student t
intervals, from a ``compare.json`` (``gpu_ablations.sh`` runs it).

    python benchmarks/quality/ablation_report.py compare.json ablations.md ablations.json
"""

import json
import statistics
import sys

from lighthouse_attn.compare.stats import describe_interval, paired_interval

VARIANTS = {  # arm: what it changes from the paper's recipe (250 Lighthouse + 150 dense)
    "lighthouse": "the paper's recipe: 250 + 150 steps, layers 0 and 7 dense",
    "rec100": "recovery 100 steps (300 + 100)",
    "rec200": "recovery 200 steps (200 + 200)",
    "dlnone": "no always-dense layers",
    "dltwo": "layers 0, 1, 6, 7 always dense",
    "ramp": "staggered switch: layers turn dense one at a time over the last 50 stage-1 steps",
    "causal": "the causal selection",
    "caffinity": "the causal selection with the affinity scorer (experimental)",
}
BASELINES = ("lighthouse", "dshort", "dense")


def finals(report: dict, arm: str) -> dict[int, tuple[float, float]]:
    """seed -> (final held-out loss, training seconds) of the arm's finished runs."""
    out = {}
    for name, run in report["runs"].items():
        if run and name.startswith(f"{arm}-") and run.get("final_val") is not None:
            out[int(name.rsplit("-s", 1)[1])] = (run["final_val"], run["wall_s"])
    return out


def main(path: str, md_path: str, json_path: str) -> None:
    report = json.load(open(path))
    rows = []
    for arm, what in VARIANTS.items():
        mine = finals(report, arm)
        if not mine:
            continue
        row = {"arm": arm, "changes": what, "seeds": sorted(mine),
               "final_val_mean": statistics.fmean(v for v, _ in mine.values()),
               "wall_s_mean": statistics.fmean(t for _, t in mine.values())}
        for base in BASELINES:
            theirs = finals(report, base)
            seeds = sorted(set(mine) & set(theirs))
            if base != arm and seeds:
                row[f"vs_{base}"] = paired_interval([mine[s][0] - theirs[s][0] for s in seeds])
                row[f"vs_{base}"]["time_ratio"] = statistics.fmean(
                    mine[s][1] / theirs[s][1] for s in seeds)
        rows.append(row)
    lines = ["| arm | changes | seeds | held-out loss | vs the paper's recipe | vs dense planned "
             "for the recipe's time | vs dense (400 steps) | time vs recipe |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for base in BASELINES:
            s = r.get(f"vs_{base}")
            cells.append(f"{describe_interval(s)}, {s['verdict'] or 'one seed'}" if s else "-")
        ratio = r.get("vs_lighthouse", {}).get("time_ratio")
        lines.append(f"| {r['arm']} | {r['changes']} | {len(r['seeds'])} | "
                     f"{r['final_val_mean']:.4f} | {' | '.join(cells)} | "
                     f"{f'{ratio:.2f}x' if ratio else '-'} |")
    env = report["settings"].get("device") or report["settings"].get("environment", {})
    text = ("# Recipe ablations at 32K\n\nFinal held-out loss (nats/byte) of the dense model "
            "after each recipe; differences are arm minus baseline, paired by seed, with 95% "
            f"Student t intervals over the seeds. Device: {env}.\n\n" + "\n".join(lines) + "\n")
    open(md_path, "w").write(text)
    json.dump({"rows": rows, "source": path}, open(json_path, "w"), indent=1)
    print(text)


if __name__ == "__main__":
    main(*sys.argv[1:4])
