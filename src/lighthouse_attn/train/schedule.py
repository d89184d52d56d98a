"""The two-stage schedule: which attention a step uses, and its learning rate.

One learning-rate schedule spans both stages (the switch to dense does not restart it). Every
schedule starts with a linear warm-up from ``lr / warmup`` to ``lr``; then:

- ``cosine``: cosine decay to ``lr * min_lr_ratio`` at the last step;
- ``linear``: linear decay to ``lr * min_lr_ratio`` at the last step;
- ``constant``: ``lr`` to the end (the paper's recipe: recovery runs at the full rate);
- ``wsd`` (warm-up, stable, decay; the default): ``lr`` until the last ``decay_steps`` (default:
  a fifth of the run), then linear decay to ``lr * min_lr_ratio`` at the last step (with
  ``decay_steps <= dense_steps`` the decay falls inside the dense stage). Measured best of the
  four for both arms (``benchmarks/quality/``).
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant", "wsd")


def stage_at(step: int, lighthouse_steps: int) -> str:
    """Attention mode of 0-based ``step``: ``"lighthouse"`` for the first
    ``lighthouse_steps`` steps, ``"dense"`` after."""
    return "lighthouse" if step < lighthouse_steps else "dense"


def layers_switched_at(step: int, lighthouse_steps: int, ramp: int, layers: int) -> int:
    """How many of the ``layers`` Lighthouse layers (first layer first) already run dense at
    0-based ``step`` of stage 1 under a staggered switch over its last ``ramp`` steps: layer
    ``i`` turns dense at step ``lighthouse_steps - ramp + i * ramp // layers``; 0 without a
    ramp. Stage 2 runs every layer dense whatever this says."""
    if ramp <= 0 or layers <= 0:
        return 0
    start = lighthouse_steps - ramp
    return sum(step >= start + i * ramp // layers for i in range(layers))


def lr_at(step: int, total_steps: int, lr: float, warmup_steps: int, min_lr_ratio: float,
          schedule: str = "cosine", decay_steps: int | None = None) -> float:
    """Learning rate of 0-based ``step`` of ``total_steps`` (``decay_steps``: ``wsd`` only)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "wsd":
        decay = max(1, decay_steps or 1)
        start = total_steps - decay
        if step < start:
            return lr
        progress = min(1.0, (step - start + 1) / decay)
        return lr * (1.0 - (1.0 - min_lr_ratio) * progress)
    progress = min(1.0, (step - warmup_steps + 1) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        factor = 1.0 - progress
    return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * factor)


def wsd_decay_steps(decay_steps: int | None, total_steps: int) -> int:
    """``decay_steps`` of a ``wsd`` run: as given, else the last fifth of the run (inside the
    dense stage whenever recovery is at least a fifth of the run, as in the paper's recipe)."""
    return decay_steps if decay_steps is not None else max(1, total_steps // 5)
