"""`lighthouse-attn plan`: tiles, gathered length, FLOPs and memory of a config, and valid
alternatives."""

from __future__ import annotations

import argparse
import json
import math
import sys

from ..config import LighthouseConfig
from ..plan import (
    DTYPE_BYTES,
    context_parallel_plan,
    context_parallel_traffic,
    format_plan,
    format_suggestions,
    format_traffic,
    plan,
    plan_warnings,
    suggest,
)
from ..settings import SettingError
from .options import add_setting_options, given_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq-len", type=int, default=98_304,
                        help="context length N (default 98,304)")
    add_setting_options(parser, LighthouseConfig)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=None)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPE_BYTES))
    parser.add_argument("--suggest", action="store_true",
                        help="also list valid (L, p, K) near the target FLOP ratio")
    parser.add_argument("--target-ratio", type=float, default=None,
                        help="for --suggest (default: this config's ratio, or 1/28)")
    parser.add_argument("--context-parallel", type=int, default=1, metavar="C",
                        help="check the config for a sequence split over C processes and show "
                             "each one's share")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def main(args: argparse.Namespace) -> int:
    cfg = LighthouseConfig(**given_settings(args, LighthouseConfig))
    result: dict = {}
    try:
        result["plan"] = plan(cfg, args.seq_len, batch_size=args.batch_size, heads=args.heads,
                              kv_heads=args.kv_heads, head_dim=args.head_dim, dtype=args.dtype)
    except SettingError:
        raise
    except ValueError:
        if not args.suggest:
            raise
    if args.target_ratio is not None and not (math.isfinite(args.target_ratio)
                                              and 0 < args.target_ratio < 1):
        raise ValueError(f"--target-ratio must be a number between 0 and 1, the attention "
                         f"FLOPs of Lighthouse over dense (got {args.target_ratio}); e.g. 0.036 "
                         "(28x fewer)")
    if args.target_ratio is not None and not args.suggest:
        raise ValueError("--target-ratio is the target of --suggest: add --suggest")
    if args.suggest:
        target = args.target_ratio or (result["plan"]["attention_flops_ratio"]
                                       if "plan" in result else 1 / 28)
        result["suggestions"] = suggest(args.seq_len, target, cfg)
        result["target_ratio"] = target
        if not result["suggestions"]:
            raise ValueError(f"no valid (L, p, K) at N={args.seq_len:,}: Lighthouse needs at "
                             f"least 128 coarsest entries per tile, so N >= 256 (L=2, p=2, "
                             "K=128); use dense attention for shorter sequences")
    if "plan" in result:
        result["warnings"] = plan_warnings(result["plan"])
        if args.context_parallel != 1:
            result["plan"]["context_parallel"] = context_parallel_plan(cfg, args.seq_len,
                                                                       args.context_parallel)
            result["plan"]["context_parallel"]["traffic"] = context_parallel_traffic(
                cfg, args.seq_len, args.context_parallel, batch_size=args.batch_size,
                heads=args.heads, kv_heads=args.kv_heads, head_dim=args.head_dim,
                dtype=args.dtype)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if "plan" in result:
        print(format_plan(result["plan"]))
        if "context_parallel" in result["plan"]:
            c = result["plan"]["context_parallel"]
            print(f"  context parallel C={c['degree']}  {c['chunks']} chunks of "
                  f"{c['chunk_len']:,} tokens, K={c['chunk_topk']:,} each; per process "
                  f"{2 * c['chunk_len']:,} tokens, gathered {c['gathered_per_process']:,}")
            print(format_traffic(c["traffic"]))
        for w in result["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
    else:
        print(f"(L={cfg.num_levels}, p={cfg.pooling_factor}, K={cfg.topk}) is not valid at "
              f"N={args.seq_len:,}; valid alternatives follow")
    if args.suggest:
        print(format_suggestions(result["suggestions"], result["target_ratio"]))
    return 0
