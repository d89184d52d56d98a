"""RecoveryCallback: the switch from stage 1 (Lighthouse) to stage 2 (SDPA) inside `Trainer`."""

from __future__ import annotations

from transformers import TrainerCallback

from .model import lighthouse_layers, to_dense


class RecoveryCallback(TrainerCallback):
    """Switch the model to dense SDPA when ``switch_step`` optimizer steps are done.

    Steps ``0 .. switch_step - 1`` train with Lighthouse, every later step (and any resumed run
    that starts past the switch) with SDPA, on the same weights, optimizer state and
    learning-rate schedule. ``switch_step=0`` trains dense from the start.

    Raises:
        ValueError: ``switch_step`` is not a non-negative integer.
    """

    def __init__(self, switch_step: int) -> None:
        if not isinstance(switch_step, int) or isinstance(switch_step, bool) or switch_step < 0:
            raise ValueError(f"switch_step must be an integer >= 0 (the optimizer step that "
                             f"starts the dense recovery stage); got {switch_step!r}")
        self.switch_step = switch_step
        self.switched_at: int | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._maybe_switch(state, model)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._maybe_switch(state, model)

    def _maybe_switch(self, state, model) -> None:
        if model is None or state.global_step < self.switch_step or not lighthouse_layers(model):
            return
        to_dense(model)
        self.switched_at = state.global_step
