"""The two-stage schedule: which attention a step uses, and its learning rate.

One learning-rate schedule spans both stages (the switch to dense does not restart it):
linear warm-up from ``lr / warmup`` to ``lr``, then cosine or linear decay that reaches
``lr * min_lr_ratio`` at the last step.
"""

from __future__ import annotations

import math


def stage_at(step: int, lighthouse_steps: int) -> str:
    """Attention mode of 0-based ``step``: ``"lighthouse"`` for the first
    ``lighthouse_steps`` steps, ``"dense"`` after."""
    return "lighthouse" if step < lighthouse_steps else "dense"


def lr_at(step: int, total_steps: int, lr: float, warmup_steps: int, min_lr_ratio: float,
          schedule: str = "cosine") -> float:
    """Learning rate of 0-based ``step`` of ``total_steps``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps + 1) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        factor = 1.0 - progress
    else:
        raise ValueError(f"unknown schedule {schedule!r}; choose 'cosine' or 'linear'")
    return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * factor)
