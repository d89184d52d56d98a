"""Models: a Llama-3-style decoder with per-layer Lighthouse or dense attention, and presets."""

from .build import (
    ModelConfig,
    add_model_arguments,
    build_model,
    build_model_config,
    model_config_from_dict,
    model_from_config,
    model_label,
)
from .llama import ATTENTION_MODES, Llama, LlamaConfig
from .presets import PRESETS

__all__ = [
           "ATTENTION_MODES",
           "PRESETS",
           "Llama",
           "LlamaConfig",
           "ModelConfig",
           "add_model_arguments",
           "build_model",
           "build_model_config",
           "model_config_from_dict",
           "model_from_config",
           "model_label",
]
