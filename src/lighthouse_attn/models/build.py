"""Model configs from a preset and changes, or from a Hugging Face ``config.json``.

``preset_model_config`` gives a :class:`LlamaConfig`; ``hf_model_config`` an
:class:`~.hf_causal_lm.HFModelConfig` (a transformers causal LM; needs the ``hf`` extra,
imported only then). Both implement the interface of ``interface.py``; a saved run reads its
config back with :func:`model_config_from_dict`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Union

from torch import nn

from ..config import LighthouseConfig
from ..settings import SettingError
from .llama import LlamaConfig
from .presets import PRESETS

if TYPE_CHECKING:
    from .hf_causal_lm import HFModelConfig

ModelConfig = Union[LlamaConfig, "HFModelConfig"]

SHAPE_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden",
                "rope_theta", "tie_embeddings")
"""The :class:`LlamaConfig` fields that change a preset's architecture."""


def parse_dense_layers(text: str) -> tuple[int, ...]:
    """``"0,1,-2,-1"`` -> ``(0, 1, -2, -1)``; ``"none"`` or ``""`` -> ``()``."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise SettingError(f"dense_layers must be comma-separated layer indices such as "
                           f"'0,1,-2,-1' (negative counts from the end) or 'none'; got "
                           f"{text!r}", "dense_layers") from None


def preset_lighthouse(preset: str, **changes) -> LighthouseConfig:
    """The preset's Lighthouse settings with ``changes`` applied (``ValueError`` if invalid)."""
    return LighthouseConfig(**{**_preset(preset).lighthouse.to_dict(), **changes})


def preset_model_config(preset: str, *, lighthouse: LighthouseConfig | None = None,
                        dense_layers: tuple[int, ...] | None = None, **shape) -> LlamaConfig:
    """``PRESETS[preset]`` with the architecture changes ``shape`` (fields of
    :data:`SHAPE_FIELDS`), and the Lighthouse settings and always-dense layers when given."""
    base = _preset(preset)
    unknown = sorted(set(shape) - set(SHAPE_FIELDS))
    if unknown:
        raise ValueError(f"unknown architecture settings {unknown}; choose from "
                         f"{list(SHAPE_FIELDS)}")
    return replace(base, **shape, lighthouse=lighthouse or base.lighthouse,
                   dense_layers=base.dense_layers if dense_layers is None else dense_layers)


def hf_model_config(path: str, lighthouse: LighthouseConfig, dense_layers: tuple[int, ...], *,
                    keep_norm_scorer: bool = False,
                    keep_hint: str = "keep_norm_scorer=True") -> tuple[HFModelConfig, str | None]:
    """The Hugging Face architecture of ``path`` (a local ``config.json``) with these Lighthouse
    settings, and a one-line note when they changed: a model with QK-norm gets the dilated
    scorer unless ``keep_norm_scorer`` (``keep_hint`` says how the caller keeps it)."""
    try:
        from .hf_causal_lm import HFModelConfig
    except ImportError as err:
        raise ValueError(f"a Hugging Face architecture needs transformers: pip install "
                         f"'lighthouse-attn[hf]' ({err})") from None
    config = HFModelConfig.from_file(path, lighthouse, dense_layers)
    from ..hf.qk_norm import config_uses_qk_norm, scorer_for

    chosen, note = scorer_for(lighthouse, config_uses_qk_norm(config.transformers_config()),
                              keep_norm_scorer=keep_norm_scorer, keep_hint=keep_hint)
    return (replace(config, lighthouse=chosen) if chosen is not lighthouse else config), note


def _preset(preset: str) -> LlamaConfig:
    if preset not in PRESETS:
        raise SettingError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}",
                           "preset")
    return PRESETS[preset]


def model_from_config(config: ModelConfig) -> nn.Module:
    """A freshly initialised model (seed the RNG first): ``config.build()``."""
    return config.build()


def model_config_from_dict(d: dict) -> ModelConfig:
    """Inverse of ``config.to_dict()`` for either kind of model config; ``ValueError`` on
    anything malformed (or an HF config without transformers installed)."""
    if isinstance(d, dict) and "hf_config" in d:
        try:
            from .hf_causal_lm import HFModelConfig
        except ImportError as err:
            raise ValueError(f"this run trains a Hugging Face architecture; it needs "
                             f"transformers: pip install 'lighthouse-attn[hf]' ({err})") from None
        return HFModelConfig.from_dict(d)
    return LlamaConfig.from_dict(d)
