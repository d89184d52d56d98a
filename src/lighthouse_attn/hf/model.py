"""Switching a Hugging Face causal LM between Lighthouse (stage 1) and SDPA (stage 2), building
one from a local ``config.json``, and saving it as a plain HF checkpoint."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from ..config import LighthouseConfig
from .attention import ATTN_IMPLEMENTATION, register
from .qk_norm import scorer_for, uses_qk_norm
from .settings import CONFIG_KEY, make_settings, read_settings

DENSE_IMPLEMENTATION = "sdpa"


class QKNormWarning(UserWarning):
    """A model with QK-norm got another scorer than asked for, or keeps one whose scores nearly
    tie."""

ATTENTIONS = (ATTN_IMPLEMENTATION, DENSE_IMPLEMENTATION)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention modules that dispatch through transformers' AttentionInterface (those
    with a ``layer_idx``, a ``config`` and grouped-query heads), in layer order."""
    found = [m for m in model.modules() if isinstance(getattr(m, "layer_idx", None), int)
             and hasattr(m, "num_key_value_groups") and hasattr(m, "config")]
    return sorted(found, key=lambda m: m.layer_idx)


def configure(model: PreTrainedModel, lighthouse: LighthouseConfig,
              dense_layers: Sequence[int] = (), *, fallback: str = "error",
              keep_norm_scorer: bool = False) -> PreTrainedModel:
    """Make ``model`` run Lighthouse in every attention layer but ``dense_layers`` (stage 1).

    Registers ``"lighthouse"`` if needed, stores the settings in the model config (so
    ``save_pretrained`` keeps them) and switches the model to ``attn_implementation=
    "lighthouse"``. Adds no parameters: the state-dict keys stay those of the dense model.

    Args:
        model: a transformers causal LM whose attention goes through the AttentionInterface
            (Llama, Qwen2, Qwen3, Mistral, ...).
        lighthouse: the op's settings.
        dense_layers: layers that keep SDPA; negative indices count from the end.
        fallback: ``"error"`` (default) or ``"dense"``: what Lighthouse layers do with input
            they cannot honour (padding or document masks, KV caches, ...; see
            :class:`~lighthouse_attn.hf.settings.Settings`).
        keep_norm_scorer: on a model with QK-norm (``q_norm``/``k_norm``), keep
            ``scorer="norm"`` (with a warning: its scores nearly tie) instead of switching to the
            dilated scorer (:mod:`~lighthouse_attn.hf.qk_norm`).

    Returns:
        ``model`` itself.

    Raises:
        ValueError: not a ``PreTrainedModel``, an architecture without AttentionInterface
            attention layers, a dense-layer index out of range, or a bad ``fallback``.
    """
    layers = _checked_layers(model)
    lighthouse, note = scorer_for(lighthouse, uses_qk_norm(model),
                                  keep_norm_scorer=keep_norm_scorer)
    if note:
        warnings.warn(note, QKNormWarning, stacklevel=2)
    settings = make_settings(lighthouse, dense_layers, len(layers), fallback)
    register()
    for config in _configs(model, layers):
        setattr(config, CONFIG_KEY, settings.to_dict())
    _set_attention(model, layers, ATTN_IMPLEMENTATION)
    return model


def to_dense(model: PreTrainedModel) -> PreTrainedModel:
    """Switch every attention layer to SDPA (stage 2, recovery). Keeps the weights, so an
    optimizer holding them goes on unchanged; idempotent. Returns ``model``."""
    _set_attention(model, _checked_layers(model), DENSE_IMPLEMENTATION)
    return model


def lighthouse_layers(model: PreTrainedModel) -> list[int]:
    """Indices of the layers that run Lighthouse now (``[]`` once :func:`to_dense` ran)."""
    out = []
    for m in attention_modules(model):
        settings = read_settings(m.config)
        if (m.config._attn_implementation == ATTN_IMPLEMENTATION and settings is not None
                and m.layer_idx not in settings.dense_layers):
            out.append(m.layer_idx)
    return out


def read_config(config_path: str | os.PathLike) -> PretrainedConfig:
    """The transformers config in a local ``config.json`` file, or a directory holding one.

    Raises:
        ValueError: no such file, or one transformers cannot read (no or unknown
            ``model_type``, bad JSON, ...).
    """
    path = Path(config_path)
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"no config.json at {str(config_path)!r}: pass a local config.json file "
                         "or a directory holding one")
    try:
        return AutoConfig.from_pretrained(str(file))
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"cannot read a transformers config from {file}: {err}") from err


def build_causal_lm(config_path: str | os.PathLike, lighthouse: LighthouseConfig,
                    dense_layers: Sequence[int], attention: str = ATTN_IMPLEMENTATION
                    ) -> PreTrainedModel:
    """A randomly initialised ``AutoModelForCausalLM`` from a local ``config.json`` (no download).

    The init draws from torch's global RNG (seed it first); parameters are fp32 unless the
    config says otherwise. Train with ``use_cache=False`` in the forward (or in the config) so
    that no KV cache is built.

    Args:
        config_path: a ``config.json`` file, or a directory holding one.
        lighthouse: Lighthouse settings, stored in the config when ``attention="lighthouse"``.
        dense_layers: layers that keep SDPA in stage 1; negative indices count from the end.
        attention: ``"lighthouse"`` (stage 1, :func:`configure` applied) or ``"sdpa"`` (a plain
            dense model).

    Raises:
        ValueError: a missing or unreadable config, an unknown ``attention``, or what
            :func:`configure` rejects.
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}; got {attention!r}")
    return causal_lm_from_config(read_config(config_path), lighthouse, dense_layers, attention)


def causal_lm_from_config(config: PretrainedConfig, lighthouse: LighthouseConfig,
                          dense_layers: Sequence[int], attention: str = ATTN_IMPLEMENTATION
                          ) -> PreTrainedModel:
    """:func:`build_causal_lm` from a transformers config object instead of a file."""
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}; got {attention!r}")
    model = AutoModelForCausalLM.from_config(config, attn_implementation=DENSE_IMPLEMENTATION)
    if attention == ATTN_IMPLEMENTATION:
        configure(model, lighthouse, dense_layers)
    return model


def save_pretrained(model: PreTrainedModel, path: str | os.PathLike, tokenizer=None,
                    **kwargs) -> None:
    """``model.save_pretrained(path, **kwargs)`` (and ``tokenizer.save_pretrained``, when
    given) written atomically: into a temporary sibling directory first, then moved in place
    (an existing ``path`` is replaced).

    The checkpoint is a plain HF one in either stage: exactly the dense model's weight keys, and
    a config that loads with ``attn_implementation="sdpa"`` (the default) or, after
    :func:`register`, with ``"lighthouse"`` and the stored settings.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = None
    try:
        model.save_pretrained(tmp, **kwargs)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it 0700; a checkpoint is readable alike
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~mask)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _checked_layers(model: object) -> list[nn.Module]:
    if not isinstance(model, PreTrainedModel):
        raise ValueError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
    layers = attention_modules(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no attention layers that dispatch through "
                         "transformers' AttentionInterface; Lighthouse supports architectures "
                         "that do (Llama, Qwen2, Qwen3, Mistral, ...)")
    indices = [m.layer_idx for m in layers]
    if indices != list(range(len(layers))):
        raise ValueError(f"{type(model).__name__}'s attention layers have indices {indices}; "
                         "Lighthouse supports models with one attention module per layer, "
                         "numbered 0..n-1")
    return layers


def _configs(model: PreTrainedModel, layers: list[nn.Module]) -> list[object]:
    """The model config and every distinct config its attention modules read."""
    configs = {id(model.config): model.config}
    for m in layers:
        configs.setdefault(id(m.config), m.config)
    return list(configs.values())


def _set_attention(model: PreTrainedModel, layers: list[nn.Module], name: str) -> None:
    model.set_attn_implementation(name)
    stuck = sorted({m.config._attn_implementation for m in layers} - {name})
    if stuck:
        raise ValueError(f"could not switch {type(model).__name__} to attn_implementation="
                         f"{name!r} (its attention layers still use {stuck}): the model does "
                         "not support switching attention after it is built")
