"""The one place where command-line options become a model: preset + overrides -> LlamaConfig.

Commands that build a model (``train``, ``bench train``) call :func:`add_model_arguments` and
:func:`build_model_config` / :func:`build_model`; a model read from another format (a Hugging
Face config, say) plugs in here.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from ..config import LighthouseConfig
from .llama import Llama, LlamaConfig
from .presets import PRESETS

# option dest -> LlamaConfig field
_MODEL_FIELDS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden", "rope_theta",
                 "tie_embeddings")
# option dest -> LighthouseConfig field
_LIGHTHOUSE_FIELDS = ("num_levels", "pooling_factor", "topk", "scorer", "dilation", "gqa")


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
                   help=f"model preset (default: {default_preset})")
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
    h.add_argument("--gqa", choices=["expand", "shared"])
    h.add_argument("--dense-layers", type=str,
                   help="layers always dense, e.g. '0,1,-2,-1' (negative: from the end; "
                        "write --dense-layers=-1 when the list starts with a minus) or 'none'")


def build_model_config(args: argparse.Namespace) -> LlamaConfig:
    """The :class:`LlamaConfig` the options describe: ``PRESETS[args.preset]`` with every
    option that is not ``None`` applied. Raises ``ValueError`` for invalid values."""
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[args.preset]
    lh_changes = {f: getattr(args, f) for f in _LIGHTHOUSE_FIELDS
                  if getattr(args, f, None) is not None}
    changes = {f: getattr(args, f) for f in _MODEL_FIELDS if getattr(args, f, None) is not None}
    if getattr(args, "dense_layers", None) is not None:
        changes["dense_layers"] = parse_dense_layers(args.dense_layers)
    if lh_changes:
        changes["lighthouse"] = LighthouseConfig(**{**base.lighthouse.to_dict(), **lh_changes})
    return replace(base, **changes)


def build_model(args: argparse.Namespace) -> Llama:
    """A freshly initialised :class:`Llama` from the options (seed the RNG first)."""
    return Llama(build_model_config(args))
