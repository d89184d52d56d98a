"""Models: a Llama-3-style decoder with per-layer Lighthouse or dense attention, presets, and
a Hugging Face causal LM behind the same interface (``interface.py``), and loading trained
ones (``loading.py``)."""

from .build import (
    SHAPE_FIELDS,
    ModelConfig,
    hf_model_config,
    model_config_from_dict,
    model_from_config,
    parse_dense_layers,
    preset_lighthouse,
    preset_model_config,
)
from .llama import ATTENTION_MODES, Llama, LlamaConfig
from .loading import load_model, resolve_model_dir
from .presets import PRESETS

__all__ = [
           "ATTENTION_MODES",
           "PRESETS",
           "HFCausalLM",
           "HFModelConfig",
           "Llama",
           "LlamaConfig",
           "ModelConfig",
           "SHAPE_FIELDS",
           "hf_model_config",
           "load_model",
           "model_config_from_dict",
           "model_from_config",
           "parse_dense_layers",
           "preset_lighthouse",
           "preset_model_config",
           "resolve_model_dir",
]


def __getattr__(name: str):
    # the HF wrapper needs transformers: import it when asked for
    if name in ("HFCausalLM", "HFModelConfig"):
        from . import hf_causal_lm

        return getattr(hf_causal_lm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
