"""Running the arms of a comparison: one after another in this process, or in parallel as
``lighthouse-attn train --resume`` processes, one per visible GPU. Every arm is an ordinary run
directory, so an interrupted comparison resumes where each arm stopped and finished arms are
skipped.

A ``wsd`` arm whose ``constant`` twin (same arm and seed) ran first branches from the twin's
checkpoint at the step where the decay starts: up to there the two runs are the same run (same
learning rates, data order and random state), so only the decay is trained again. Arms planned
for equal time train last, once the runs they are planned from have finished.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..jsonfile import write_json
from ..models import ModelConfig
from ..train import TrainConfig, train
from ..train.checkpoint import list_checkpoints
from ..train.metrics import read_metrics
from .equal_time import plan_steps, save_plan, saved_plan
from .final_eval import CACHE


@dataclass
class Job:
    """One arm under one schedule and seed."""

    name: str
    arm: str
    schedule: str
    seed: int
    run: TrainConfig
    model: ModelConfig
    branch_from: Job | None = None  # the constant twin of a wsd arm
    equal_time: Job | None = None  # the recipe run this dense run is planned to match
    dense_ref: Job | None = None  # the dense run that times the plan
    plan: dict | None = None  # the equal-time plan, once made

    @property
    def run_dir(self) -> Path:
        return Path(self.run.run_dir)

    @property
    def branch_step(self) -> int:
        """The step where the wsd decay starts (the constant twin checkpoints there)."""
        return self.run.total_steps - self.run.wsd_decay


def is_finished(run_dir: Path, total_steps: int) -> bool:
    """A finished run: its metrics reach the last step and its dense model is written, or its
    final evaluation is (results copied without the weights)."""
    records = read_metrics(run_dir / "metrics.jsonl") if run_dir.is_dir() else []
    kept = (run_dir / "final").is_dir() or (run_dir / CACHE).is_file()
    return kept and bool(records) and records[-1]["step"] == total_steps


def write_run_config(job: Job) -> None:
    """``config.json`` of a new run directory, as ``lighthouse-attn train`` writes it."""
    write_json(job.run_dir / "config.json",
               {"train": job.run.to_dict(), "model": job.model.to_dict()})


def check_same_settings(job: Job) -> None:
    """An existing run directory must hold this job's settings (not another comparison's).
    Where it lives and its label may differ (results can be moved), and a setting its older
    config lacks must be at its default."""
    saved = json.loads((job.run_dir / "config.json").read_text())
    mine = json.loads(json.dumps({"train": job.run.to_dict(), "model": job.model.to_dict()}))
    defaults = {"train": json.loads(json.dumps(TrainConfig(run_dir="-").to_dict()))}
    diff = sorted(f"{part}.{k}" for part in ("train", "model")
                  for k in set(saved[part]) | set(mine[part])
                  if k not in _LABELS.get(part, ()) and
                  saved[part].get(k, defaults.get(part, {}).get(k)) != mine[part].get(k))
    if diff:
        raise ValueError(f"{job.run_dir} holds a run with other settings ({', '.join(diff)}); "
                         "use another output directory, or the same settings as before")


_LABELS = {"train": ("run_dir", "preset")}  # names, not settings


def branch(job: Job) -> bool:
    """Start ``job`` (wsd) from its constant twin's checkpoint at the decay start: copy the
    checkpoint and the metrics up to it. Returns False when the twin has no such checkpoint."""
    twin, step = job.branch_from, job.branch_step
    ckpt = dict(list_checkpoints(twin.run_dir)).get(step)
    if ckpt is None:
        return False
    write_run_config(job)
    target = job.run_dir / "checkpoints" / ckpt.name
    if not target.exists():
        tmp = target.with_name(f".tmp-branch-{ckpt.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(ckpt, tmp)
        os.replace(tmp, target)
    records = [r for r in read_metrics(twin.run_dir / "metrics.jsonl") if r["step"] <= step]
    tmp = job.run_dir / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, job.run_dir / "metrics.jsonl")
    with open(job.run_dir / "train.log", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  branched from {twin.run_dir} at step "
                f"{step} (constant and wsd agree up to the decay)\n")
    return True


def prepare(job: Job) -> str:
    """Make ``job``'s run directory ready to ``train --resume``; returns what happens:
    ``"done"``, ``"resume"``, ``"branch"`` or ``"start"``."""
    if is_finished(job.run_dir, job.run.total_steps):
        check_same_settings(job)
        return "done"
    if (job.run_dir / "config.json").is_file():
        check_same_settings(job)
        return "resume"
    if job.branch_from is not None and branch(job):
        return "branch"
    write_run_config(job)
    return "start"


def apply_plan(job: Job, plan: dict) -> None:
    """Set an equal-time job's dense steps from ``plan``; ``ValueError`` if the plan does not
    make a valid run (e.g. fewer steps than warm-up plus decay)."""
    try:
        run = replace(job.run, dense_steps=plan["steps"])
        run.validate()
    except ValueError as err:
        raise ValueError(f"arm {job.arm!r} planned for equal time ({plan['steps']} steps): "
                         f"{err}") from None
    job.run, job.plan = run, plan


def plan_equal_time(job: Job, echo=print) -> None:
    """Plan an equal-time job from its recipe's and the dense arm's finished runs (or reuse
    the plan kept in its run directory) and record the plan there."""
    if job.plan is not None:  # planned in an earlier phase, applied with the job
        return
    plan = saved_plan(job.run_dir)
    if plan is None:
        plan = plan_steps(job.equal_time.run_dir, job.dense_ref.run_dir)
        echo(f"compare: {job.name}: planned {plan['steps']} dense steps to end with "
             f"{job.equal_time.name} ({plan['recipe_s']:.1f} s; dense {plan['dense_step_s']:.3f}"
             f" s/step after {plan['dense_startup_s']:.1f} s of start-up)")
    apply_plan(job, plan)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    save_plan(job.run_dir, plan)


class Interrupted(Exception):
    """A signal stopped an arm (its checkpoint is written); the comparison stops there."""

    def __init__(self, signal_name: str, job: Job) -> None:
        super().__init__(f"{signal_name} while training {job.name}")
        self.signal_name, self.job = signal_name, job


def run_jobs(jobs: list[Job], parallel: int, progress: bool, echo=print,
             on_finished=None) -> None:
    """Train every job to its end; wsd jobs after their constant twins, equal-time jobs after
    the runs they are planned from. ``parallel > 1`` runs that many processes at once, each on
    its own GPU when GPUs are visible. Without them, ``on_finished(job)`` runs after each job
    finishes (and for finished ones found), before the next starts, so that an arm's final
    evaluation never waits for the whole comparison.

    Raises:
        Interrupted: SIGINT or SIGTERM stopped an arm (after its checkpoint)."""
    first = [j for j in jobs if j.branch_from is None and j.equal_time is None]
    later = [j for j in jobs if j.branch_from is not None]
    last = [j for j in jobs if j.equal_time is not None]
    for wave in (first, later, last):
        for job in wave:
            if job.equal_time is not None:
                plan_equal_time(job, echo)
        if parallel > 1:
            _run_parallel(wave, parallel, echo)
        else:
            for job in wave:
                what = prepare(job)
                echo(f"compare: {job.name}: {what}")
                if what != "done":
                    result = train(job.run, job.model, resume=True, progress=progress)
                    if result.status == "interrupted":
                        raise Interrupted(result.interrupted_by or "signal", job)
                if on_finished is not None:
                    on_finished(job)


def _run_parallel(jobs: list[Job], parallel: int, echo) -> None:
    import torch

    gpus = torch.cuda.device_count()
    pending = list(jobs)
    running: list[tuple[subprocess.Popen, Job, int, object]] = []
    failed = []
    while pending or running:
        busy = {slot for *_, slot, _ in running}
        while pending and len(running) < parallel:
            job = pending.pop(0)
            what = prepare(job)
            echo(f"compare: {job.name}: {what}")
            if what == "done":
                continue
            slot = min(set(range(parallel)) - busy)
            busy.add(slot)
            env = dict(os.environ)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
            log = open(job.run_dir / "compare_stdout.log", "a")
            cmd = [sys.executable, "-m", "lighthouse_attn", "train", "--resume", str(job.run_dir),
                   "--no-progress"]
            running.append((subprocess.Popen(cmd, env=env, stdout=log,
                                             stderr=subprocess.STDOUT), job, slot, log))
        time.sleep(0.2)
        for item in list(running):
            proc, job, _, log = item
            if proc.poll() is not None:
                running.remove(item)
                log.close()
                if proc.returncode:
                    failed.append(f"{job.name} (exit {proc.returncode}; see "
                                  f"{job.run_dir / 'compare_stdout.log'})")
    if failed:
        raise ValueError(f"arms failed: {'; '.join(failed)}; fix and run the same command again "
                         "to resume")
