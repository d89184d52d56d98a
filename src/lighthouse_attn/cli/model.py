"""Model options of ``train``, ``compare`` and ``bench train``: ``--preset`` or ``--hf-config``,
the architecture (fields of ``LlamaConfig``) and the Lighthouse settings (fields of
``LighthouseConfig``), all defaulting to the preset's."""

from __future__ import annotations

import argparse
import sys

from ..config import LighthouseConfig
from ..models import (
    PRESETS,
    SHAPE_FIELDS,
    LlamaConfig,
    ModelConfig,
    hf_model_config,
    parse_dense_layers,
    preset_lighthouse,
    preset_model_config,
)
from .options import add_setting_options, argument_group, flag, given_settings

_MODEL = "model (defaults come from --preset)"
_LIGHTHOUSE = "Lighthouse (stage 1; defaults come from --preset)"


def add_model_arguments(parser: argparse.ArgumentParser, default_preset: str = "demo") -> None:
    """``--preset``/``--hf-config``, the architecture and the Lighthouse options."""
    g = argument_group(parser, _MODEL)
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
    add_setting_options(parser, LlamaConfig, from_preset=True, group=_MODEL)
    add_setting_options(parser, LighthouseConfig, from_preset=True, group=_LIGHTHOUSE)
    argument_group(parser, _LIGHTHOUSE).add_argument(
        "--dense-layers", help="layers always dense, e.g. '0,1,-2,-1' (negative: from the end; "
        "write --dense-layers=-1 when the list starts with a minus) or 'none'")


class _StorePreset(argparse.Action):
    """Stores ``--preset`` and records that it was given (``--hf-config`` rejects it)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.preset_given = True


def build_model_config(args: argparse.Namespace) -> ModelConfig:
    """The model config the options describe: the preset with every given option applied
    (``vocab_size``, unless given, the ``--tokenizer``'s), or with ``--hf-config`` a Hugging
    Face architecture with the preset's Lighthouse settings and the given ones applied."""
    lighthouse = preset_lighthouse(args.preset, **given_settings(args, LighthouseConfig))
    dense = getattr(args, "dense_layers", None)
    dense_layers = None if dense is None else parse_dense_layers(dense)
    shape = {k: v for k, v in given_settings(args, LlamaConfig).items() if k in SHAPE_FIELDS}
    if getattr(args, "hf_config", None):
        conflicts = (["--preset"] if getattr(args, "preset_given", False) else []) + [
            flag(k) for k in shape]
        if conflicts:
            raise ValueError(f"--hf-config takes the architecture from its config.json: drop "
                             f"{', '.join(conflicts)} (the Lighthouse options and "
                             "--dense-layers still apply)")
        if dense_layers is None:
            dense_layers = PRESETS[args.preset].dense_layers
        config, note = hf_model_config(args.hf_config, lighthouse, dense_layers,
                                       keep_norm_scorer=getattr(args, "scorer", None) == "norm",
                                       keep_hint="--scorer norm")
        if note:
            print(f"note: {note}", file=sys.stderr)
        return config
    shape.setdefault("vocab_size", _tokenizer_vocab(args))
    return preset_model_config(args.preset, lighthouse=lighthouse, dense_layers=dense_layers,
                               **shape)


def _tokenizer_vocab(args: argparse.Namespace) -> int:
    """The vocabulary of ``--tokenizer`` (the byte tokenizer's when there is none)."""
    from ..data import load_tokenizer

    return load_tokenizer(getattr(args, "tokenizer", None) or "bytes",
                          getattr(args, "sep_token", None)).vocab_size


def model_label(args: argparse.Namespace, config: ModelConfig) -> str:
    """A short name for run directories and titles: the preset, ``custom-LAYERSxWIDTH`` when
    shape options changed it, or ``hf-MODEL_TYPE``."""
    if any(getattr(args, f, None) is not None for f in SHAPE_FIELDS):
        return f"custom-{config.n_layers}x{config.d_model}"
    return config.label(args.preset)
