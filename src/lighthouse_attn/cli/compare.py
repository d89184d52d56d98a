"""`lighthouse-attn compare`: does Lighthouse pay off here? Dense from scratch against the
Lighthouse-then-dense recipe (and any other arms) on the same model, data and budget, over
paired seeds, scored on held-out text; the report's first line is the verdict.

Every arm is an ordinary run directory under ``OUT/runs/``: run the same command again to
resume an interrupted comparison (finished arms are skipped), or with ``--report-only`` to
rebuild the report from the files alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from ..compare.arms import Arm, arm_configs, check_equal_time, parse_arm, run_name
from ..compare.equal_time import saved_plan
from ..compare.runner import Interrupted, Job, apply_plan, is_finished, run_jobs
from ..data.tokenizer import loss_unit
from ..environment import device_name, versions
from ..jsonfile import write_json
from ..train.options import SCHEDULES, TrainConfig
from ..train.signals import EXIT_CODES
from .model import add_model_arguments, build_model_config, model_label
from .train import add_train_arguments, train_config_from_args

HELP = "dense vs Lighthouse-then-dense on held-out text over paired seeds: the verdict"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Example: lighthouse-attn compare --data train/ --eval-data held_out/ "
                     "--schedules constant,wsd --seeds 0,1 --out compare/demo")
    add_model_arguments(parser)
    add_train_arguments(parser)
    c = parser.add_argument_group("comparison")
    c.add_argument("--arms", default="dense,lighthouse",
                   help="built-in arms, comma-separated: dense, lighthouse (paper selection), "
                        "causal (causal selection); default: dense,lighthouse")
    c.add_argument("--arm", action="append", default=[], metavar="NAME:key=value,...",
                   help="another arm, e.g. k1024:topk=1024 or early:lighthouse_steps=100; "
                        "dshort:equal_time=lighthouse is a dense arm planned to end when the "
                        "lighthouse arm ends, from the finished runs' step times (repeatable)")
    c.add_argument("--schedules", help="comma-separated schedules, each arm runs under each "
                   f"({', '.join(SCHEDULES)}; default: --schedule)")
    c.add_argument("--seeds", default="0,1", help="comma-separated seeds (default: 0,1)")
    c.add_argument("--out", default="compare",
                   help="directory of the runs and the report (default: compare/)")
    c.add_argument("--jobs", default="1",
                   help="arms trained at once: a number, or 'auto' for one per visible GPU "
                        "(default 1: one after another in this process)")
    c.add_argument("--no-branch", action="store_true",
                   help="train wsd arms from scratch instead of from their constant twin's "
                        "checkpoint at the decay start")
    c.add_argument("--passkey-trials", type=int, default=3,
                   help="passkey trials per cell for each final model (0: skip)")
    c.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report from the run directories as they are")


def _parse_list(text: str, flag: str, cast=str) -> list:
    items = [x.strip() for x in text.split(",") if x.strip()]
    try:
        out = [cast(x) for x in items]
    except ValueError:
        raise ValueError(f"{flag} must be a comma-separated list, e.g. '0,1'; got {text!r}"
                         ) from None
    if not out or len(set(out)) != len(out):
        raise ValueError(f"{flag} must list distinct values (got {text!r})")
    return out


def plan_jobs(args: argparse.Namespace) -> tuple[list[Job], dict, dict]:
    """The jobs of the comparison, the report's groups and its settings; validates all."""
    for flag in ("resume", "run_dir", "overwrite"):
        if getattr(args, flag, None):
            raise ValueError(f"compare keeps its runs under --out; drop --{flag.replace('_', '-')}")
    if not args.eval_data:
        raise ValueError("compare scores every arm on held-out text: pass --eval-data PATH "
                         "(text the training data does not contain)")
    if args.passkey_trials < 0:
        raise ValueError(f"--passkey-trials must be >= 0 (got {args.passkey_trials})")
    schedules = _parse_list(args.schedules or args.schedule or TrainConfig.schedule,
                            "--schedules")
    for s in schedules:
        if s not in SCHEDULES:
            raise ValueError(f"unknown schedule {s!r} in --schedules; choose from "
                             f"{', '.join(SCHEDULES)}")
    if args.decay_steps is not None and "wsd" not in schedules:
        raise ValueError("--decay-steps applies to the wsd schedule: add wsd to --schedules")
    args.schedule = "wsd" if "wsd" in schedules else schedules[0]  # the base run validates it
    base_model = build_model_config(args)
    label = model_label(args, base_model)
    base_run = replace(train_config_from_args(args, "-"), preset=label)
    if base_run.lighthouse_steps < 1 or base_run.dense_steps < 0:
        raise ValueError("the base run needs --lighthouse-steps >= 1 (the dense arm is built "
                         "from it with the same total)")
    arms: list[Arm] = [parse_arm(a) for a in _parse_list(args.arms, "--arms")]
    arms += [parse_arm(a) for a in args.arm]
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be distinct (got {names})")
    if "dense" not in names:
        raise ValueError("the comparison needs the dense arm (dense from scratch) as its "
                         "baseline: add it to --arms")
    check_equal_time(arms)
    seeds = _parse_list(args.seeds, "--seeds", int)
    out = Path(args.out)
    jobs, groups, by_key = [], {}, {}
    for schedule in schedules:
        for arm in arms:
            key = f"{arm.name}-{schedule}"
            groups[key] = {"arm": arm.name, "schedule": schedule, "seeds": {},
                           **({"equal_time": arm.equal_time} if arm.equal_time else {})}
            for seed in seeds:
                name = run_name(arm.name, schedule, seed)
                run, model = arm_configs(arm, base_run, base_model, schedule, seed,
                                         str(out / "runs" / name))
                job = Job(name, arm.name, schedule, seed, run, model)
                by_key[arm.name, schedule, seed] = job
                groups[key]["seeds"][seed] = name
                jobs.append(job)
    planned = {a.name: a.equal_time for a in arms if a.equal_time}
    for job in jobs:
        if job.arm in planned:
            job.equal_time = by_key[planned[job.arm], job.schedule, job.seed]
            job.dense_ref = by_key["dense", job.schedule, job.seed]
            plan = saved_plan(job.run_dir)
            if plan is not None:  # planned in an earlier phase
                apply_plan(job, plan)
    if "constant" in schedules and "wsd" in schedules and not args.no_branch:
        for job in jobs:
            twin = by_key.get((job.arm, "constant", job.seed))
            if job.schedule == "wsd" and twin is not None and job.equal_time is None:
                job.branch_from = twin
                twin.run = replace(twin.run, save_at=sorted({*twin.run.save_at,
                                                             job.branch_step}))
    budgets = {j.run.total_steps * j.run.batch_size * j.run.seq_len for j in jobs
               if j.equal_time is None}
    first = jobs[0]
    m = first.model
    settings = {
        "command": "lighthouse-attn compare " + " ".join(sys.argv[2:]),
        "arms": {a.name: a.changes for a in arms}, "schedules": schedules, "seeds": seeds,
        "matched_tokens": len(budgets) == 1, "total_steps": first.run.total_steps,
        "tokens_per_step": first.run.batch_size * first.run.seq_len,
        "loss_unit": loss_unit(first.run.tokenizer),
        "model_summary": (f"{label}, {m.num_parameters() / 1e6:.1f}M parameters, "
                          f"{m.n_layers} layers, d_model {m.d_model}, seq_len "
                          f"{first.run.seq_len:,}, batch {first.run.batch_size}; stage 1: "
                          f"L={m.lighthouse.num_levels} p={m.lighthouse.pooling_factor} "
                          f"K={m.lighthouse.topk}, dense layers "
                          f"{list(m.dense_layer_indices)}"),
        "eval_summary": (f"{first.run.eval_sequences} x {first.run.seq_len:,} tokens of "
                         f"{', '.join(first.run.eval_data)}"),
        "base_train": base_run.to_dict(), "base_model": base_model.to_dict(),
        **versions(), "device": device_name()}
    return jobs, groups, settings


def main(args: argparse.Namespace) -> int:
    from ..compare import report as rep
    from ..compare.final_eval import evaluate_final
    from ..runtime import resolve_device, set_cpu_threads

    jobs, groups, settings = plan_jobs(args)
    if not settings["matched_tokens"]:
        print("compare: warning: the arms train on different numbers of tokens; the verdict "
              "is not a matched-token comparison", file=sys.stderr)
    out = Path(args.out)
    device = resolve_device(jobs[0].run.device)  # every arm shares the base run's
    if device.type == "cpu":
        set_cpu_threads(args.threads)

    def evaluate(job: Job) -> None:
        if is_finished(job.run_dir, job.run.total_steps):
            evaluate_final(job.run_dir, job.run.eval_data, job.run.seq_len,
                           job.run.eval_sequences, args.passkey_trials,
                           max(1, job.run.batch_size // job.run.grad_accum), device,
                           progress=not args.no_progress)

    if not args.report_only:
        parallel = (max(1, torch.cuda.device_count()) if args.jobs == "auto" else
                    int(args.jobs) if args.jobs.isdigit() and int(args.jobs) > 0 else None)
        if parallel is None:
            raise ValueError(f"--jobs must be a positive number or 'auto' (got {args.jobs!r})")
        try:
            run_jobs(jobs, parallel, progress=not args.no_progress, on_finished=evaluate)
        except Interrupted as stop:
            print(f"compare: {stop.signal_name} while training {stop.job.name}: its checkpoint "
                  "is written; run the same command again to resume the comparison",
                  file=sys.stderr)
            return EXIT_CODES.get(stop.signal_name, 130)
        if parallel > 1:  # arms trained in other processes: evaluated here, once all ended
            for job in jobs:
                evaluate(job)
    runs = {job.name: rep.run_summary(job.run_dir) for job in jobs}
    if args.report_only and not any(runs.values()):
        raise ValueError(f"--report-only: no run of this comparison has started under {out} "
                         f"(looked for {out / 'runs'}/{jobs[0].name}, ...); run it first "
                         "without --report-only, or point --out at its directory")
    out.mkdir(parents=True, exist_ok=True)
    earlier = out / "compare.json"
    if args.report_only and earlier.is_file():  # where the runs ran, not where this runs
        before = json.loads(earlier.read_text())["settings"]
        for k in ("command", "device", *versions()):  # nothing of this machine's
            if k in before:
                settings[k] = before[k]
            else:
                settings.pop(k, None)
    for job in jobs:
        if job.plan is not None:
            groups[f"{job.arm}-{job.schedule}"].setdefault("plans", {})[job.seed] = job.plan
    report = rep.build_report(runs, groups, settings)
    plots = ["compare_curves.png", "compare_final.png", "compare_frontier.png"]
    rep.plot_curves(report, groups, out / plots[0])
    rep.plot_final(report, out / plots[1])
    rep.plot_frontier(report, out / plots[2])
    if rep.plot_positions(report, out / "compare_position.png"):
        plots.append("compare_position.png")
    write_json(out / "compare.json", report)
    text = rep.markdown(report, plots)
    (out / "compare.md").write_text(text)
    print(text.split("\n![")[0].rstrip())
    print(f"wrote {out / 'compare.md'}, {out / 'compare.json'} and {', '.join(plots)}")
    return 0
