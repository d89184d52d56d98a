"""What a run writes for people: ``metrics.jsonl``, ``train.log``, ``loss.png``, ``summary.md``.

Each line of ``metrics.jsonl`` is one optimizer step: ``step`` (1-based), ``stage``
(``"lighthouse"`` or ``"dense"``), ``loss``, ``lr``, ``grad_norm``, ``tokens_per_s``,
``tokens`` (seen so far) and ``elapsed_s`` (training wall time so far, across resumes). Steps
at which held-out text was scored add ``val_dense`` (nats/byte under dense attention),
``val_lighthouse`` (under Lighthouse, stage 1 only) and ``val_s`` (seconds the scoring took,
not part of ``elapsed_s``).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from ..data.tokenizer import BYTES, loss_unit


class MetricsLog:
    """Appends step records to ``run_dir/metrics.jsonl`` and events to ``run_dir/train.log``;
    does nothing when not ``enabled`` (processes other than the main one)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, echo=print) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.log_path = Path(run_dir) / "train.log"
        self.enabled = enabled
        self.echo = echo if enabled else (lambda *_: None)

    def truncate(self, step: int) -> None:
        """Drop records after ``step`` (a resumed run rewrites them), and a torn last line;
        the file is replaced atomically."""
        if not self.enabled:
            return
        kept = [r for r in read_metrics(self.path) if r["step"] <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)

    def append(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def event(self, message: str) -> None:
        """Print ``message`` and append it, time-stamped, to ``train.log``."""
        if not self.enabled:
            return
        self.echo(message)
        with open(self.log_path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {message}\n")


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (empty if it does not exist). A torn last line (a
    write cut short by a crash) is skipped; damage anywhere else is a ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a step record")
        except ValueError:
            if i == len(lines) - 1:
                break  # torn last line: the step it began is redone on resume
            raise ValueError(f"{path}:{i + 1} is not a metrics record; restore the file or "
                             "start a new run") from None
        out.append(record)
    return out


def stage_stats(records: list[dict]) -> dict[str, dict]:
    """Per stage: steps, wall time, median tokens/s, first and last loss."""
    out = {}
    for stage in ("lighthouse", "dense"):
        rs = [r for r in records if r["stage"] == stage]
        if not rs:
            continue
        wall = sum(r["tokens_step"] / r["tokens_per_s"] for r in rs if r["tokens_per_s"] > 0)
        out[stage] = {"steps": len(rs), "wall_s": wall,
                      "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
                      "first_loss": rs[0]["loss"], "last_loss": rs[-1]["loss"]}
    return out


def _running_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_loss(records: list[dict], switch_step: int | None, path: str | Path,
              title: str, unit: str = "nats/byte") -> None:
    """``loss.png``: loss and tokens/s per step, coloured by stage, the switch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_tps) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1]})
    colors = {"lighthouse": "tab:orange", "dense": "tab:blue"}
    labels = {"lighthouse": "stage 1: Lighthouse", "dense": "stage 2: dense SDPA"}
    for stage, color in colors.items():
        rs = [r for r in records if r["stage"] == stage]
        if rs:
            steps, losses = [r["step"] for r in rs], [r["loss"] for r in rs]
            ax_loss.plot(steps, losses, color=color, lw=0.8, alpha=0.35)
            ax_loss.plot(steps, _running_mean(losses, 10), color=color, lw=1.8,
                         label=f"{labels[stage]} (mean of 10 steps)")
            ax_tps.plot(steps, [r["tokens_per_s"] for r in rs], color=color, lw=1)
    scored = [r for r in records if "val_dense" in r]
    if scored:
        ax_loss.plot([r["step"] for r in scored], [r["val_dense"] for r in scored], "o-",
                     color="black", ms=3.5, lw=1.2, label="held-out, dense attention")
        lh = [r for r in scored if "val_lighthouse" in r]
        if lh:
            ax_loss.plot([r["step"] for r in lh], [r["val_lighthouse"] for r in lh], "s--",
                         color="tab:red", ms=3.5, lw=1.2, label="held-out, Lighthouse attention")
    if switch_step is not None:
        for ax in (ax_loss, ax_tps):
            ax.axvline(switch_step + 0.5, color="gray", ls="--", lw=1)
        ax_loss.text(switch_step + 0.5, 0.98, " switch to dense", color="gray", va="top",
                     transform=ax_loss.get_xaxis_transform())
    ax_loss.set_ylabel(f"loss ({unit})")
    ax_loss.set_title(title)
    ax_loss.legend(loc="lower left")
    ax_loss.grid(alpha=0.3)
    ax_tps.set_ylabel("tokens/s")
    ax_tps.set_xlabel("step")
    ax_tps.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def validation_lines(records: list[dict], switch_step: int | None,
                     unit: str = "nats/byte") -> list[str]:
    """The held-out section of ``summary.md`` (empty when nothing was scored)."""
    scored = [r for r in records if "val_dense" in r]
    if not scored:
        return []
    lines = ["", f"## Held-out loss ({unit})", "",
             "| step | stage | dense attention | Lighthouse attention |", "|---|---|---|---|"]
    for r in scored:
        lh = f"{r['val_lighthouse']:.4f}" if "val_lighthouse" in r else "-"
        lines.append(f"| {r['step']} | {r['stage']} | {r['val_dense']:.4f} | {lh} |")
    end1 = next((r for r in scored if r["step"] == switch_step and "val_lighthouse" in r), None)
    lines.append("")
    if end1:
        lines.append(f"End of stage 1 (step {switch_step}): {end1['val_dense']:.4f} under dense "
                     f"attention, {end1['val_lighthouse']:.4f} under Lighthouse (dense - "
                     f"Lighthouse = {end1['val_dense'] - end1['val_lighthouse']:+.4f}).")
    lines.append(f"Last score: {scored[-1]['val_dense']:.4f} (dense attention) at step "
                 f"{scored[-1]['step']}. Scoring took {_fmt_time(sum(r['val_s'] for r in scored))} "
                 f"in all, not counted as training time.")
    return lines


def _fmt_time(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def write_summary(path: str | Path, *, title: str, records: list[dict], config: dict,
                  switch_step: int | None, final_dir: str | None, status: str,
                  final_note: str = "load with `lighthouse_attn.models.load_model`"
                  ) -> str:
    """Write ``summary.md`` and return its text; ``final_note`` says how to load the final
    model."""
    stats = stage_stats(records)
    lines = [f"# {title}", "", f"Status: {status}", ""]
    lines += ["| stage | steps | wall time | median tokens/s | first loss | last loss |",
              "|---|---|---|---|---|---|"]
    for stage, s in stats.items():
        name = "1: Lighthouse" if stage == "lighthouse" else "2: dense"
        lines.append(f"| {name} | {s['steps']} | {_fmt_time(s['wall_s'])} | "
                     f"{s['median_tokens_per_s']:,.0f} | {s['first_loss']:.4f} | "
                     f"{s['last_loss']:.4f} |")
    if records:
        last = records[-1]
        lines += ["", (f"Final loss: {last['loss']:.4f} at step {last['step']} "
                       f"({last['tokens']:,} tokens, {_fmt_time(last['elapsed_s'])} training).")]
    if switch_step is not None and any(r["step"] == switch_step + 1 for r in records):
        before = next(r["loss"] for r in records if r["step"] == switch_step)
        after = next(r["loss"] for r in records if r["step"] == switch_step + 1)
        lines.append(f"Switch to dense after step {switch_step}: loss {before:.4f} -> "
                     f"{after:.4f} ({after - before:+.4f} nats).")
    if final_dir:
        lines.append(f"Dense model: `{final_dir}` ({final_note}).")
    lines += validation_lines(records, switch_step,
                              loss_unit(config.get("train", {}).get("tokenizer", BYTES)))
    files = "Files: `config.json`, `metrics.jsonl`, `loss.png`, `train.log`, `checkpoints/`."
    lines += ["", files, "", "## Config", "", "```json",
              json.dumps(config, indent=2), "```", ""]
    text = "\n".join(lines)
    Path(path).write_text(text)
    return text
