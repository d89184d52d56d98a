"""Training: the two-stage loop, its schedule, checkpoints, metrics and distributed setup."""

from ..models.loading import load_model
from .loop import RunResult, TrainingError, train, train_step
from .options import PRESET_TRAINING, TrainConfig

__all__ = ["PRESET_TRAINING", "RunResult", "TrainConfig", "TrainingError", "load_model",
           "train", "train_step"]
