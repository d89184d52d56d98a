"""Evaluation and inspection of trained checkpoints.

- :mod:`.passkey`: the passkey retrieval grid (``lighthouse-attn eval niah``);
- :mod:`.position_loss`: held-out loss by token position (``lighthouse-attn eval loss``);
- :mod:`.selection`: a layer's q, k, v and where its selection left every position
  (``lighthouse-attn inspect``);
- :mod:`.plots`: their pictures, :func:`plot_selection` among them;
- :mod:`.loading`, :mod:`.forward`: loading checkpoints, last-position logits, memory budget.
"""

from .loading import EvalCheckpoint, load_checkpoint
from .passkey import PasskeyResult, run_passkey
from .plots import plot_passkey, plot_position_loss, plot_selection
from .position_loss import PositionLoss, context_ranges, loss_by_position, position_buckets
from .selection import layer_qkv, leaf_levels, model_selection, selection_summary

__all__ = [
           "EvalCheckpoint",
           "PasskeyResult",
           "PositionLoss",
           "layer_qkv",
           "leaf_levels",
           "load_checkpoint",
           "context_ranges",
           "loss_by_position",
           "model_selection",
           "plot_passkey",
           "plot_position_loss",
           "plot_selection",
           "position_buckets",
           "run_passkey",
           "selection_summary",
]
