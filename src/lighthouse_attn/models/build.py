"""The one place where command-line options become a model.

``--preset`` + overrides -> :class:`LlamaConfig` -> :class:`Llama`, or ``--hf-config PATH`` +
the Lighthouse options -> :class:`~.hf_causal_lm.HFModelConfig` ->
:class:`~.hf_causal_lm.HFCausalLM` (a transformers causal LM; needs the ``hf`` extra,
imported only then). Both implement the interface of ``interface.py``.

Commands that build a model (``train``, ``bench train``) call :func:`add_model_arguments`,
:func:`build_model_config` and :func:`model_from_config`; a saved run reads its config back with
:func:`model_config_from_dict`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Union

from torch import nn

from ..config import LighthouseConfig
from .llama import LlamaConfig
from .presets import PRESETS

if TYPE_CHECKING:
    from .hf_causal_lm import HFModelConfig

ModelConfig = Union[LlamaConfig, "HFModelConfig"]

# option dest -> LlamaConfig field
_MODEL_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden",
                 "rope_theta", "tie_embeddings")
# option dest -> LighthouseConfig field
_LIGHTHOUSE_FIELDS = ("num_levels", "pooling_factor", "topk", "scorer", "dilation", "selection",
                      "gqa")


def parse_dense_layers(text: str) -> tuple[int, ...]:
    """``"0,1,-2,-1"`` -> ``(0, 1, -2, -1)``; ``"none"`` or ``""`` -> ``()``."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--dense-layers must be comma-separated layer indices such as "
                         f"'0,1,-2,-1' (negative counts from the end) or 'none'; got {text!r}"
                         ) from None


def add_model_arguments(parser: argparse.ArgumentParser, default_preset: str = "demo") -> None:
    """Add ``--preset``, the architecture overrides and the Lighthouse settings (all default
    to the preset's values)."""
    g = parser.add_argument_group("model (defaults come from --preset)")
    g.add_argument("--preset", default=default_preset, choices=sorted(PRESETS),
                   action=_StorePreset,
                   help=f"model preset (default: {default_preset}): demo (1.25M parameters), "
                        "small (125M), paper-268m (the body of the paper's 530M model with "
                        "bytes), paper-530m (the paper's model: give it the Llama 3 tokenizer "
                        "or your own with --tokenizer)")
    g.add_argument("--hf-config", metavar="PATH",
                   help="train a Hugging Face architecture from a local config.json (random "
                        "init, no download) instead of a preset; the Lighthouse options apply, "
                        f"with the {default_preset} preset's as defaults; needs the hf extra")
    g.add_argument("--vocab-size", type=int,
                   help="embedding rows (default: the tokenizer's vocabulary)")
    g.add_argument("--d-model", type=int, help="width of the residual stream")
    g.add_argument("--n-layers", type=int, help="decoder blocks")
    g.add_argument("--n-heads", type=int, help="query heads")
    g.add_argument("--n-kv-heads", type=int, help="key/value heads (GQA)")
    g.add_argument("--ffn-hidden", type=int, help="SwiGLU hidden size")
    g.add_argument("--rope-theta", type=float, help="rotary embedding base")
    g.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="share input and output embeddings")
    h = parser.add_argument_group("Lighthouse (stage 1; defaults come from --preset)")
    h.add_argument("--num-levels", type=int, help="pyramid levels L")
    h.add_argument("--pooling-factor", type=int, help="pooling factor p")
    h.add_argument("--topk", type=int, help="selection budget K (a multiple of 128)")
    h.add_argument("--scorer", choices=["norm", "dilated"])
    h.add_argument("--dilation", type=int, help="dilation of the dilated scorer")
    h.add_argument("--selection", choices=["paper", "causal"],
                   help="paper: the paper's top-K (reads later tokens); causal: every "
                        "refinement decided from earlier tokens only (default: paper)")
    h.add_argument("--gqa", choices=["expand", "shared"])
    h.add_argument("--dense-layers", type=str,
                   help="layers always dense, e.g. '0,1,-2,-1' (negative: from the end; "
                        "write --dense-layers=-1 when the list starts with a minus) or 'none'")


class _StorePreset(argparse.Action):
    """Stores ``--preset`` and records that it was given (``--hf-config`` rejects it)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.preset_given = True


def build_model_config(args: argparse.Namespace) -> ModelConfig:
    """The model config the options describe: ``PRESETS[args.preset]`` with every option that
    is not ``None`` applied (``vocab_size``, unless given, the ``--tokenizer``'s), or with
    ``--hf-config`` an ``HFModelConfig`` whose Lighthouse settings are the preset's with the
    Lighthouse options applied. Raises ``ValueError`` for
    invalid values, and for ``--hf-config`` with ``--preset`` or a model-shape option."""
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[args.preset]
    lh_changes = {f: getattr(args, f) for f in _LIGHTHOUSE_FIELDS
                  if getattr(args, f, None) is not None}
    lighthouse = LighthouseConfig(**{**base.lighthouse.to_dict(), **lh_changes})
    dense_layers = (base.dense_layers if getattr(args, "dense_layers", None) is None
                    else parse_dense_layers(args.dense_layers))
    if getattr(args, "hf_config", None):
        return _hf_model_config(args, lighthouse, dense_layers)
    changes = {f: getattr(args, f) for f in _MODEL_FIELDS if getattr(args, f, None) is not None}
    changes.setdefault("vocab_size", _tokenizer_vocab(args))
    return replace(base, **changes, dense_layers=dense_layers, lighthouse=lighthouse)


def _tokenizer_vocab(args: argparse.Namespace) -> int:
    """The vocabulary of ``--tokenizer`` (the byte tokenizer's when there is none)."""
    from ..data import load_tokenizer

    return load_tokenizer(getattr(args, "tokenizer", None) or "bytes",
                          getattr(args, "sep_token", None)).vocab_size


def _hf_model_config(args: argparse.Namespace, lighthouse: LighthouseConfig,
                     dense_layers: tuple[int, ...]) -> HFModelConfig:
    conflicts = (["--preset"] if getattr(args, "preset_given", False) else []) + [
        "--" + f.replace("_", "-") for f in _MODEL_FIELDS if getattr(args, f, None) is not None]
    if conflicts:
        raise ValueError(f"--hf-config takes the architecture from its config.json: drop "
                         f"{', '.join(conflicts)} (the Lighthouse options and --dense-layers "
                         "still apply)")
    try:
        from .hf_causal_lm import HFModelConfig
    except ImportError as err:
        raise ValueError(f"--hf-config needs transformers: pip install 'lighthouse-attn[hf]' "
                         f"({err})") from None
    config = HFModelConfig.from_file(args.hf_config, lighthouse, dense_layers)
    from ..hf.qk_norm import config_uses_qk_norm, scorer_for

    chosen, note = scorer_for(lighthouse, config_uses_qk_norm(config.transformers_config()),
                              keep_norm_scorer=getattr(args, "scorer", None) == "norm",
                              keep_hint="--scorer norm")
    if note:
        print(f"note: {note}", file=sys.stderr)
    return replace(config, lighthouse=chosen) if chosen is not lighthouse else config


def model_label(args: argparse.Namespace, config: ModelConfig) -> str:
    """A short name for run directories and titles: the preset, ``custom-LAYERSxWIDTH`` when
    shape options changed it, or ``hf-MODEL_TYPE``."""
    if any(getattr(args, f, None) is not None for f in _MODEL_FIELDS):
        return f"custom-{config.n_layers}x{config.d_model}"
    return config.label(args.preset)


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


def build_model(args: argparse.Namespace) -> nn.Module:
    """A freshly initialised model from the options (seed the RNG first)."""
    return model_from_config(build_model_config(args))
