"""`lighthouse-attn train`: two-stage pretraining (Lighthouse, then dense recovery).

With no arguments it is the main job: the ``demo`` preset on the embedded stdlib corpus,
both stages, a few minutes on a CPU. ``--hf-config PATH`` trains a Hugging Face architecture
from a local ``config.json`` instead (same stages; the final model is an HF checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

from ..models import ModelConfig, model_config_from_dict
from ..train import TrainConfig, TrainingError, train
from ..train.options import PRESET_TRAINING
from ..train.signals import EXIT_CODES
from .model import add_model_arguments, build_model_config, model_label
from .options import add_setting_options, argument_group

_RESUME_ALLOWED = {"resume", "no_progress", "device", "threads", "command",
                   "context_parallel", "verify_data"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Every option defaults to the preset's value; with no options this runs "
                     "the demo (both stages on the embedded stdlib corpus).")
    add_model_arguments(parser)
    add_train_arguments(parser)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The run's options: the fields of :class:`TrainConfig`, and how this command runs."""
    g = argument_group(parser, "run")
    g.add_argument("--resume", metavar="RUN_DIR",
                   help="continue RUN_DIR from its latest checkpoint with its own settings")
    g.add_argument("--overwrite", action="store_true",
                   help="allow a --run-dir that already holds a run (its files are replaced)")
    add_setting_options(parser, TrainConfig)
    s = argument_group(parser, "system")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--dry-run", action="store_true",
                   help="validate the settings, print the plan and exit")


def train_config_from_args(args: argparse.Namespace, run_dir: str) -> TrainConfig:
    """The :class:`TrainConfig` of the options: each given option, else the preset's
    training default, else the field's default."""
    defaults = PRESET_TRAINING[args.preset]
    values = {}
    for f in fields(TrainConfig):
        given = getattr(args, f.name, None)
        if given is None and f.name in defaults:
            given = defaults[f.name]
        if given is not None:
            values[f.name] = given
    # absolute paths: a run resumes from any working directory
    values["data"] = [os.path.abspath(p) for p in values.get("data", [])]
    values["eval_data"] = [os.path.abspath(p) for p in values.get("eval_data", [])]
    values["save_at"] = sorted(set(values.get("save_at", [])))
    tokenizer = values.get("tokenizer", "bytes")
    values["tokenizer"] = tokenizer if tokenizer == "bytes" else os.path.abspath(tokenizer)
    values["run_dir"] = run_dir
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


def _defaults() -> dict:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return vars(parser.parse_args([]))


def _resume_configs(args: argparse.Namespace) -> tuple[TrainConfig, ModelConfig]:
    defaults = _defaults()
    extra = sorted(k for k, v in vars(args).items()
                   if k not in _RESUME_ALLOWED and k in defaults and v != defaults[k])
    if extra:
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise ValueError(f"--resume continues with the settings in RUN_DIR/config.json; drop "
                         f"{flags}")
    path = Path(args.resume) / "config.json"
    if not path.is_file():
        from ..models.loading import list_checkpoints

        ckpts = list_checkpoints(args.resume)
        if ckpts:
            raise ValueError(f"{args.resume} holds checkpoints but no config.json: the run's "
                             "settings are lost; write config.json again with the settings it "
                             "was started with ({\"train\": ..., \"model\": ...}), or export "
                             f"its model with lighthouse-attn export {ckpts[-1][1]} OUT")
        raise ValueError(f"{args.resume} is not a run directory (no config.json)")
    try:
        saved = json.loads(path.read_text())
        run = TrainConfig.from_dict(dict(saved["train"], run_dir=str(args.resume)))
        model = model_config_from_dict(saved["model"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a valid run config ({err!r})") from None
    changes = {"device": args.device} if args.device not in (None, "auto") else {}
    if args.threads is not None:
        changes["threads"] = args.threads
    if args.verify_data is not None:
        changes["verify_data"] = args.verify_data
    if args.context_parallel is not None:  # checkpoints hold full tensors: any degree resumes
        changes["context_parallel"] = args.context_parallel
    return replace(run, **changes), model


def _new_run_dir(args: argparse.Namespace, label: str) -> str:
    if args.run_dir is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("pass --run-dir under torchrun (every process must agree on it)")
        return os.path.join("runs", f"{label}-{time.strftime('%Y%m%d-%H%M%S')}")
    return str(Path(args.run_dir))


def main(args: argparse.Namespace) -> int:
    if args.resume:
        run, model = _resume_configs(args)
    else:
        model = build_model_config(args)
        label = model_label(args, model)
        run = replace(train_config_from_args(args, _new_run_dir(args, label)), preset=label)
    try:
        result = train(run, model, resume=bool(args.resume), overwrite=args.overwrite,
                       progress=not args.no_progress, dry_run=args.dry_run)
    except TrainingError as err:
        print(f"lighthouse-attn train: error: {err}", file=sys.stderr)
        return 1
    if result.status == "interrupted":
        return EXIT_CODES.get(result.interrupted_by, 1)
    return 0
