"""Summarise a folder of `lighthouse-attn eval recall` results (recall_*.json, in any
sub-folders named after the checkpoint) as a Markdown table and one bar chart.

    python benchmarks/quality/recall_report.py RESULTS_DIR OUT.md [OUT.png]

Per result: the mean over Lighthouse layers of the share of dense attention mass kept exactly
by the selection, the oracle and a random selection (same budget and tiling), the share left
to pooled entries, and the recall-against-K curve of the one layer the tool traces.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def load(results: Path) -> list[dict]:
    rows = []
    for path in sorted(results.rglob("recall_*.json"), key=lambda p: _natural(str(p))):
        r = json.loads(path.read_text())
        layers = r["layers"]

        def mean(which: str, part: str = "exact") -> float:
            return sum(x[which][part] for x in layers) / len(layers)

        rows.append({"checkpoint": str(path.parent.relative_to(results)),
                     "scorer": r["lighthouse"]["scorer"], "rule": r["lighthouse"]["selection"],
                     "topk": r["lighthouse"]["topk"], "selection": mean("selection"),
                     "pooled": mean("selection", "pooled"), "oracle": mean("oracle"),
                     "random": mean("random"), "curve_layer": r["recall_vs_topk"]["layer"],
                     "curve": [(p["topk"], p["selection"]["exact"], p["oracle"]["exact"],
                                p["random"]["exact"]) for p in r["recall_vs_topk"]["points"]]})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| checkpoint | scorer | selection rule | kept exactly (mean over layers) "
             "| only through pooled entries | oracle | random "
             "| one layer, K: selection / oracle / random |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        curve = "; ".join(f"{k}: {s:.3f} / {o:.3f} / {x:.3f}" for k, s, o, x in r["curve"])
        lines.append(f"| {r['checkpoint']} | {r['scorer']} | {r['rule']} | {r['selection']:.3f} "
                     f"| {r['pooled']:.3f} | {r['oracle']:.3f} | {r['random']:.3f} "
                     f"| layer {r['curve_layer']}: {curve} |")
    return "\n".join(lines) + "\n"


def _natural(name: str) -> list:
    """Sort key that puts step50 before step250."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checkpoints = sorted({r["checkpoint"] for r in rows}, key=_natural)
    variants = sorted({(r["scorer"], r["rule"]) for r in rows})
    fig, ax = plt.subplots(figsize=(3.6 + 1.5 * len(checkpoints), 3.8))
    width = 0.8 / max(len(variants), 1)
    for i, (scorer, rule) in enumerate(variants):
        xs, ys = [], []
        for c, ckpt in enumerate(checkpoints):
            for r in rows:
                if (r["checkpoint"], r["scorer"], r["rule"]) == (ckpt, scorer, rule):
                    xs.append(c - 0.4 + (i + 0.5) * width)
                    ys.append(r["selection"])
        ax.bar(xs, ys, width, label=f"{scorer} scorer, {rule} rule")
    for c, ckpt in enumerate(checkpoints):
        first = next(r for r in rows if r["checkpoint"] == ckpt)
        for key, style in (("oracle", "-"), ("random", ":")):
            ax.hlines(first[key], c - 0.42, c + 0.42, colors="black", linestyles=style,
                      label=key if c == 0 else None)
    ax.set_xticks(range(len(checkpoints)), checkpoints, fontsize=8)
    ax.set_ylabel("dense attention mass kept exactly")
    ax.set_title("Recall of the selection, mean over Lighthouse layers", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    rows = load(Path(argv[0]))
    if not rows:
        sys.exit(f"no recall_*.json under {argv[0]}")
    Path(argv[1]).write_text(table(rows))
    print(table(rows), end="")
    if len(argv) == 3:
        plot(rows, Path(argv[2]))


if __name__ == "__main__":
    main(sys.argv[1:])
