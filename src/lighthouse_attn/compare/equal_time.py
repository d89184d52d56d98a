"""Planning a dense arm to end when a Lighthouse recipe ends.

The plan reads step times measured on the device that trained the comparison: the recipe's
finished run of the same seed gives the time to match; the dense arm's finished run of the same
seed gives dense's start-up time and seconds per step (fitted on its training clock, held-out
scoring excluded, after the first tenth of its steps). The planned run trains
``round((recipe time - start-up) / seconds per step)`` dense steps. The plan and its inputs are
kept in the planned run's directory (``equal_time_plan.json``), so later phases and rebuilt
reports reuse it instead of planning again.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..jsonfile import write_json
from ..train.metrics import read_metrics

PLAN_FILE = "equal_time_plan.json"


def _finished_records(run_dir: Path, role: str) -> list[dict]:
    records = read_metrics(run_dir / "metrics.jsonl") if run_dir.is_dir() else []
    config = run_dir / "config.json"
    if not records or not config.is_file():
        raise ValueError(f"cannot plan for equal time: the {role} run {run_dir} has not run; "
                         "train it first (compare trains it before the planned arm)")
    train = json.loads(config.read_text())["train"]
    total = train["lighthouse_steps"] + train["dense_steps"]
    if records[-1]["step"] != total:
        raise ValueError(f"cannot plan for equal time: the {role} run {run_dir} stopped at step "
                         f"{records[-1]['step']} of {total}; finish it first")
    return records


def plan_steps(recipe_dir: Path, dense_dir: Path) -> dict:
    """The number of dense steps that end when the run in ``recipe_dir`` ended, timed by the
    dense run in ``dense_dir`` (both finished, same device); the plan and its inputs.

    Raises:
        ValueError: either run is missing or unfinished, or the dense run is too short to time.
    """
    recipe = _finished_records(Path(recipe_dir), "recipe")
    dense = _finished_records(Path(dense_dir), "dense")
    if len(dense) < 4:
        raise ValueError(f"cannot plan for equal time: the dense run {dense_dir} logged "
                         f"{len(dense)} steps; at least 4 are needed to time it")
    target_s = recipe[-1]["elapsed_s"]
    first = dense[max(1, len(dense) // 10) - 1]
    last = dense[-1]
    step_s = (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])
    startup_s = max(0.0, first["elapsed_s"] - first["step"] * step_s)
    steps = max(1, round((target_s - startup_s) / step_s)) if step_s > 0 else last["step"]
    return {"steps": steps, "recipe_run": str(recipe_dir), "recipe_s": target_s,
            "recipe_steps": recipe[-1]["step"], "dense_run": str(dense_dir),
            "dense_steps": last["step"], "dense_s": last["elapsed_s"],
            "dense_step_s": step_s, "dense_startup_s": startup_s,
            "method": "step times of the finished runs of this seed, on their device"}


def saved_plan(run_dir: Path) -> dict | None:
    """The plan kept in a planned run's directory, if any."""
    path = Path(run_dir) / PLAN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def save_plan(run_dir: Path, plan: dict) -> None:
    write_json(Path(run_dir) / PLAN_FILE, plan)
