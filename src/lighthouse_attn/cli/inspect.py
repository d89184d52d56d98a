"""`lighthouse-attn inspect`: what stage-1 selection picks in one layer of a model for a text.

The text's first ``--seq-len`` bytes go through the model (layers before ``--layer`` in the
mode ``--attention``); the q and k of ``--layer`` are run through :func:`lighthouse_attn.select`
with the checkpoint's Lighthouse settings, or with ``--num-levels`` / ``--pooling-factor`` /
``--topk`` / ... overrides to see what another budget would pick on the same q and k.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from ..config import LighthouseConfig
from ..eval.loading import load_checkpoint
from ..eval.plots import plot_selection
from ..eval.selection import model_selection, selection_summary
from ..jsonfile import write_json
from .eval import describe, file_stem, setup_runtime
from .options import add_runtime_options, add_setting_options, argument_group

_OVERRIDES = ("num_levels", "pooling_factor", "topk", "scorer", "dilation", "selection", "gqa")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR",
                        help="run directory or checkpoint directory")
    parser.add_argument("--layer", type=int, required=True,
                        help="attention layer to inspect (negative: from the end)")
    parser.add_argument("--head", default="all",
                        help="head to draw on top (an index of the selecting heads), or 'all' "
                             "(default) for the raster and the aggregate only")
    parser.add_argument("--text", required=True, metavar="FILE", help="input text (UTF-8)")
    parser.add_argument("--seq-len", type=int,
                        help="tokens (bytes) of the text to use (default: the longest length "
                             "the selection accepts within the text and the training seq_len, "
                              "or the shortest it accepts if that is longer)")
    parser.add_argument("--attention", choices=["lighthouse", "dense"], default="lighthouse",
                        help="attention of the other layers on the way to --layer (default: "
                             "lighthouse, as in stage 1)")
    add_setting_options(parser, LighthouseConfig, from_preset=True,
                        group="selection settings (default: the checkpoint's)")
    add_runtime_options(parser, precision=False, title="runtime and output")
    r = argument_group(parser, "runtime and output")
    r.add_argument("--out", default="eval", help="directory for the JSON and PNG (default: eval/)")


def _parse_head(text: str) -> int | None:
    if text.strip().lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--head must be a head index or 'all' (got {text!r})") from None


def choose_seq_len(available: int, configs: list[LighthouseConfig], cap: int | None) -> int:
    """The longest length ``<= min(available, cap)`` that every config in ``configs`` accepts,
    or the shortest one they accept when ``cap`` is below it; ``ValueError`` (naming the
    shortest valid length) when the text is shorter than that."""
    multiple = math.lcm(*(c.seq_len_multiple for c in configs))
    shortest = -(-max(c.min_seq_len for c in configs) // multiple) * multiple
    if available < shortest:
        raise ValueError(f"the text has {available:,} tokens (bytes), but the selection needs "
                         f"a sequence length that is a multiple of {multiple:,} and at least "
                         f"{shortest:,}: give a longer --text or lower --topk / --num-levels")
    limit = min(available, cap) if cap else available
    return max(shortest, limit // multiple * multiple)


def main(args: argparse.Namespace) -> int:
    head = _parse_head(args.head)
    try:
        text = Path(args.text).read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise ValueError(f"cannot read --text {args.text!r}: {err.strerror}") from None
    device = setup_runtime(args)
    ckpt = load_checkpoint(args.checkpoint, args.attention, device)
    tokens = ckpt.tokenizer.encode(text)
    mc = ckpt.model.config
    n = len(ckpt.model.layers)
    if not -n <= args.layer < n:
        raise ValueError(f"--layer {args.layer} is out of range for a model with {n} layers: "
                         f"use 0..{n - 1}")
    layer = args.layer % n
    changes = {f: getattr(args, f) for f in _OVERRIDES if getattr(args, f) is not None}
    cfg = LighthouseConfig(**{**mc.lighthouse.to_dict(), **changes}) if changes else \
        mc.lighthouse
    heads = mc.n_heads if cfg.gqa == "expand" else mc.n_kv_heads
    if head is not None and not 0 <= head < heads:
        raise ValueError(f"--head {head} is out of range: layer {layer} selects with {heads} "
                         f"heads (gqa={cfg.gqa!r}): use 0..{heads - 1} or 'all'")
    configs = [cfg]
    if args.attention == "lighthouse" and mc.lighthouse_layer_indices:
        configs.append(mc.lighthouse)
    if args.seq_len is not None:
        if args.seq_len > len(tokens):
            raise ValueError(f"--seq-len {args.seq_len:,} is longer than the text "
                             f"({len(tokens):,} bytes)")
        for c in configs:
            c.validate(args.seq_len)
        seq_len = args.seq_len
    else:
        seq_len = choose_seq_len(len(tokens), configs, ckpt.trained_seq_len)
    ids = torch.tensor([tokens[:seq_len]], dtype=torch.int64, device=device)
    selection = model_selection(ckpt.model, ids, layer, cfg)
    summary = selection_summary(selection, cfg.pooling_factor, cfg.num_levels)

    always_dense = layer in mc.dense_layer_indices
    title = (f"{ckpt.name}: layer {layer}" + (f", head {head}" if head is not None else "") +
             f"; L={cfg.num_levels} p={cfg.pooling_factor} K={cfg.topk} {cfg.scorer} "
             f"{cfg.selection}" +
             (" (this layer runs dense in stage 1)" if always_dense else ""))
    print(f"selection of {title}")
    print(f"  {seq_len:,} tokens of {args.text}; gathered length {summary['gathered_length']:,}")
    print("  head  " + "".join(f"{'level ' + str(lvl):>10}" for lvl in range(cfg.num_levels)))
    for h in summary["heads"]:
        print(f"  {h['head']:>4}  " + "".join(f"{100 * f:>9.1f}%" for f in h["level_fraction"]))
    print("  (share of positions that ended at each level; level 0 = refined to tokens)")

    out = Path(args.out)
    stem = file_stem(f"inspect_{ckpt.name}_layer{layer}" +
                     (f"_head{head}" if head is not None else ""))
    write_json(out / f"{stem}.json", {
        "checkpoint": describe(ckpt), "text": args.text, "layer": layer, "head": head,
        "attention_before": args.attention, "layer_always_dense": always_dense,
        "selection_config": cfg.to_dict(), **summary})
    fig = plot_selection(selection, cfg, head=head, path=out / f"{stem}.png", title=title)
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.png')}")
    return 0
