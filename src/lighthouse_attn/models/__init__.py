"""Models: a Llama-3-style decoder with per-layer Lighthouse or dense attention, and presets."""

from .build import add_model_arguments, build_model, build_model_config
from .llama import ATTENTION_MODES, Llama, LlamaConfig
from .presets import PRESETS

__all__ = [
           "ATTENTION_MODES",
           "PRESETS",
           "Llama",
           "LlamaConfig",
           "add_model_arguments",
           "build_model",
           "build_model_config",
]
