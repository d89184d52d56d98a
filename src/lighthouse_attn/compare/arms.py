"""The arms of a comparison: named variations of one base run, each under each schedule and
seed, every one an ordinary run directory.

Built-in arms: ``dense`` (dense SDPA from scratch for the whole budget), ``lighthouse`` (the
paper's selection in stage 1, then dense) and ``causal`` (the causal selection, then dense).
``NAME:key=value,...`` defines another: keys are training settings (``lighthouse_steps``,
``lr``, ...), Lighthouse settings (``topk``, ``selection``, ...) or ``dense_layers``; changing
``lighthouse_steps`` alone keeps the total number of steps. ``NAME:equal_time=ARM`` is a dense
arm planned to end when ARM (a Lighthouse arm of the comparison) ends: its number of steps is
set, per seed, from ARM's finished run and the dense arm's step time (:mod:`.equal_time`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields, replace

from ..config import LighthouseConfig
from ..models import ModelConfig
from ..models.build import parse_dense_layers
from ..train.options import TrainConfig, check_types

BUILTIN_ARMS: dict[str, dict] = {
    "dense": {"lighthouse_steps": 0},
    "lighthouse": {"selection": "paper"},
    "causal": {"selection": "causal"},
}
_TRAIN_KEYS = {f.name for f in fields(TrainConfig)} - {
    "run_dir", "seed", "schedule", "data", "eval_data", "eval_every", "eval_sequences",
    "text_field", "device", "threads", "save_at", "preset"}
_LIGHTHOUSE_KEYS = {f.name for f in fields(LighthouseConfig)}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class Arm:
    """A named set of changes to the base run."""

    name: str
    changes: dict

    @property
    def is_dense(self) -> bool:
        return self.changes.get("lighthouse_steps") == 0 or self.equal_time is not None

    @property
    def equal_time(self) -> str | None:
        """The Lighthouse arm whose time this dense arm is planned for, if any."""
        return self.changes.get("equal_time")


def parse_arm(text: str) -> Arm:
    """``"dense"``, ``"lighthouse"``, ``"causal"`` or ``"NAME:key=value,key=value"``.

    Raises ``ValueError`` naming the bad part and what is allowed."""
    text = text.strip()
    if ":" not in text:
        if text not in BUILTIN_ARMS:
            raise ValueError(f"unknown arm {text!r}: use one of {', '.join(BUILTIN_ARMS)} or "
                             "define one as NAME:key=value,... (e.g. k1024:topk=1024)")
        return Arm(text, dict(BUILTIN_ARMS[text]))
    name, _, spec = text.partition(":")
    if not _NAME.match(name) or "-" in name:
        raise ValueError(f"arm name {name!r} must be letters, digits, '_' or '.' (it names "
                         "run directories)")
    changes: dict = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, eq, raw = part.partition("=")
        if not eq:
            raise ValueError(f"arm {name!r}: write key=value, got {part!r}")
        if key not in _TRAIN_KEYS | _LIGHTHOUSE_KEYS | {"dense_layers", "equal_time"}:
            raise ValueError(f"arm {name!r}: unknown setting {key!r}; use a training setting "
                             f"({', '.join(sorted(_TRAIN_KEYS))}), a Lighthouse setting "
                             f"({', '.join(sorted(_LIGHTHOUSE_KEYS))}), dense_layers or "
                             "equal_time")
        if key == "equal_time":
            if not _NAME.match(raw):
                raise ValueError(f"arm {name!r}: equal_time names the Lighthouse arm whose "
                                 f"time to match, e.g. equal_time=lighthouse (got {raw!r})")
            changes[key] = raw
            continue
        if key == "dense_layers":
            changes[key] = parse_dense_layers(raw.replace(";", ","))
            continue
        try:
            changes[key] = json.loads(raw)
        except json.JSONDecodeError:
            changes[key] = raw
    if not changes:
        raise ValueError(f"arm {name!r} changes nothing: add key=value settings")
    steps = {"lighthouse_steps", "dense_steps"} & set(changes)
    if "equal_time" in changes and steps:
        raise ValueError(f"arm {name!r}: equal_time plans the number of dense steps itself; "
                         f"drop {', '.join(sorted(steps))}")
    return Arm(name, changes)


def check_equal_time(arms: list[Arm]) -> None:
    """Every ``equal_time`` arm names another arm of the comparison that trains with
    Lighthouse. Raises ``ValueError`` otherwise."""
    by_name = {a.name: a for a in arms}
    for arm in arms:
        target = by_name.get(arm.equal_time) if arm.equal_time else None
        if arm.equal_time and (target is None or target.is_dense):
            lighthouse = ", ".join(a.name for a in arms if not a.is_dense) or \
                "none: add one, e.g. the lighthouse arm"
            raise ValueError(f"arm {arm.name!r}: equal_time={arm.equal_time} must name a "
                             f"Lighthouse arm of this comparison ({lighthouse})")


def run_name(arm: str, schedule: str, seed: int) -> str:
    """Run directory name of one arm, schedule and seed."""
    return f"{arm}-{schedule}-s{seed}"


def arm_configs(arm: Arm, base_run: TrainConfig, base_model: ModelConfig, schedule: str,
                seed: int, run_dir: str, planned_steps: int | None = None
                ) -> tuple[TrainConfig, ModelConfig]:
    """The run and model config of ``arm`` under ``schedule`` and ``seed``; validated. An
    ``equal_time`` arm trains ``planned_steps`` dense steps (the base run's total until it is
    planned)."""
    total = base_run.total_steps
    train_changes = {k: v for k, v in arm.changes.items() if k in _TRAIN_KEYS}
    if arm.equal_time:
        train_changes.update(lighthouse_steps=0, dense_steps=planned_steps or total)
    if "lighthouse_steps" in train_changes and "dense_steps" not in train_changes:
        train_changes["dense_steps"] = total - train_changes["lighthouse_steps"]
    decay = base_run.wsd_decay if schedule == "wsd" else None  # the same in every arm
    try:
        check_types(train_changes)
        run = replace(base_run, run_dir=run_dir, seed=seed, schedule=schedule,
                      decay_steps=decay, **train_changes)
        run.validate()
    except (TypeError, ValueError) as err:
        raise ValueError(f"arm {arm.name!r} ({schedule}): {err}") from None
    lh_changes = {k: v for k, v in arm.changes.items() if k in _LIGHTHOUSE_KEYS}
    model = base_model
    try:
        if lh_changes:
            model = replace(model, lighthouse=LighthouseConfig(
                **{**model.lighthouse.to_dict(), **lh_changes}))
        if "dense_layers" in arm.changes:
            model = replace(model, dense_layers=arm.changes["dense_layers"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"arm {arm.name!r}: {err}") from None
    return run, model
