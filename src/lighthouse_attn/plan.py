"""`lighthouse-attn plan`: what a config costs at a sequence length, and valid alternatives."""

from __future__ import annotations

import argparse
import json
import math
import sys

from .config import TILE, LighthouseConfig

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def plan(config: LighthouseConfig, seq_len: int, batch_size: int = 1, heads: int = 8,
         kv_heads: int | None = None, head_dim: int = 128, dtype: str = "bf16") -> dict:
    """Planning figures of ``config`` at ``seq_len`` (validates it): tiles, gathered length,
    entries per level, attention FLOP ratio, and bytes of the gathered and dense tensors."""
    config.validate(seq_len)
    kv_heads = kv_heads or heads
    S = config.gathered_length(seq_len)
    ratio = config.attention_flops_ratio(seq_len)
    nbytes = DTYPE_BYTES[dtype]
    kv_gathered = kv_heads if config.gqa == "shared" else heads
    row = batch_size * S * head_dim * nbytes
    gathered = row * (2 * heads + 2 * kv_gathered)  # q, o with H heads; k, v
    dense = batch_size * seq_len * head_dim * nbytes * (2 * heads + 2 * kv_heads)
    out = dict(config.to_dict(), seq_len=seq_len, tiles=config.num_tiles,
               coarsest_entries_per_tile=(seq_len // config.coarsest_window // config.num_tiles
                                          if config.num_levels > 1 else None),
               gathered_length=S, level_counts=config.level_counts(seq_len),
               attention_flops_ratio=ratio, attention_speedup=1 / ratio,
               batch_size=batch_size, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
               dtype=dtype, gathered_bytes=gathered, dense_qkvo_bytes=dense)
    return out


def suggest(seq_len: int, target_ratio: float, base: LighthouseConfig, count: int = 12
            ) -> list[dict]:
    """Valid ``(L, p, K)`` at ``seq_len`` (p a power of two, as the GPU kernels need) whose
    attention FLOP ratio is nearest ``target_ratio`` (in log distance)."""
    rows = []
    for L in range(2, 6):
        for p in (2, 4, 8):
            probe = LighthouseConfig(num_levels=L, pooling_factor=p, topk=TILE,
                                     scorer=base.scorer, dilation=base.dilation)
            for k in probe.valid_topks(seq_len):
                cfg = LighthouseConfig(num_levels=L, pooling_factor=p, topk=k,
                                       scorer=base.scorer, dilation=base.dilation)
                try:
                    cfg.validate(seq_len)
                except ValueError:
                    continue
                r = cfg.attention_flops_ratio(seq_len)
                rows.append(dict(num_levels=L, pooling_factor=p, topk=k,
                                 gathered_length=cfg.gathered_length(seq_len),
                                 attention_flops_ratio=r,
                                 distance=abs(math.log(r / target_ratio))))
    rows.sort(key=lambda d: (d["distance"], d["num_levels"], d["topk"]))
    return rows[:count]


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def _fewer(ratio: float) -> str:
    if ratio < 1:
        return f"{1 / ratio:.1f}x fewer"
    if ratio == 1:
        return "the same as dense"
    return f"{ratio:.2f}x MORE than dense"


def plan_warnings(p: dict) -> list[str]:
    """What makes a config pointless at this length."""
    if p["num_levels"] == 1:
        return ["L=1 is exactly dense attention: no pyramid, no selection"]
    if p["attention_flops_ratio"] >= 1:
        return [f"the gathered length {p['gathered_length']:,} is not shorter than N="
                f"{p['seq_len']:,}: this config costs more than dense attention; lower K or "
                "raise L (see --suggest)"]
    return []


def context_parallel_plan(config: LighthouseConfig, seq_len: int, degree: int) -> dict:
    """Each process's share under context parallelism (``ValueError`` when it cannot be
    exact: see ``lighthouse_attn.parallel.chunk_config``)."""
    from .parallel.attention import chunk_config

    local = chunk_config(config, seq_len, degree)
    chunk = seq_len // (2 * degree)
    gathered = local.gathered_length(chunk) if local.num_levels > 1 else chunk
    return {"degree": degree, "chunks": 2 * degree, "chunk_len": chunk,
            "chunk_topk": local.topk if local.num_levels > 1 else None,
            "gathered_per_process": 2 * gathered}


def format_plan(p: dict) -> str:
    levels = "; ".join(f"level {lvl}: {n:,}" for lvl, n in reversed(list(enumerate(
        p["level_counts"]))))
    tiles = (f"{p['tiles']}  ({p['coarsest_entries_per_tile']:,} coarsest entries each, 128 "
             "refined per level)" if p["num_levels"] > 1 else "- (L=1: no selection)")
    lines = [
        f"Lighthouse plan: N={p['seq_len']:,}  L={p['num_levels']}  p={p['pooling_factor']}  "
        f"K={p['topk']:,}  scorer={p['scorer']}  selection={p['selection']}  gqa={p['gqa']}",
        f"  tiles T                  {tiles}",
        f"  gathered length S        {p['gathered_length']:,}  ({levels})",
        f"  attention FLOPs vs dense {p['attention_flops_ratio']:.4f}  "
        f"({_fewer(p['attention_flops_ratio'])})",
        f"  gathered q,k,v,o         {_mb(p['gathered_bytes'])}  vs dense q,k,v,o "
        f"{_mb(p['dense_qkvo_bytes'])}  (B={p['batch_size']} H={p['heads']} "
        f"H_kv={p['kv_heads']} D={p['head_dim']} {p['dtype']}, per layer)",
    ]
    return "\n".join(lines)


def format_suggestions(rows: list[dict], target: float) -> str:
    lines = [f"valid (L, p, K) nearest attention FLOP ratio {target:.4f}:",
             f"  {'L':>2} {'p':>2} {'K':>6} {'S':>9} {'ratio':>8} {'fewer':>7}"]
    for r in rows:
        lines.append(f"  {r['num_levels']:>2} {r['pooling_factor']:>2} {r['topk']:>6} "
                     f"{r['gathered_length']:>9,} {r['attention_flops_ratio']:>8.4f} "
                     f"{1 / r['attention_flops_ratio']:>6.1f}x")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = LighthouseConfig()
    parser.add_argument("--seq-len", type=int, default=98_304, help="context length N")
    parser.add_argument("--num-levels", type=int, default=d.num_levels)
    parser.add_argument("--pooling-factor", type=int, default=d.pooling_factor)
    parser.add_argument("--topk", type=int, default=d.topk)
    parser.add_argument("--scorer", default=d.scorer, choices=["norm", "dilated"])
    parser.add_argument("--dilation", type=int, default=d.dilation)
    parser.add_argument("--gqa", default=d.gqa, choices=["expand", "shared"])
    parser.add_argument("--selection", default=d.selection, choices=["paper", "causal"],
                        help="selection rule (same S, tiles and cost either way)")
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
    cfg = LighthouseConfig(num_levels=args.num_levels, pooling_factor=args.pooling_factor,
                           topk=args.topk, scorer=args.scorer, dilation=args.dilation,
                           gqa=args.gqa, selection=args.selection)
    for name in ("seq_len", "batch_size", "heads", "head_dim"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.kv_heads is not None and (args.kv_heads < 1 or args.heads % args.kv_heads):
        raise ValueError(f"--kv-heads must divide --heads={args.heads}")
    result: dict = {}
    try:
        result["plan"] = plan(cfg, args.seq_len, args.batch_size, args.heads, args.kv_heads,
                              args.head_dim, args.dtype)
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
        for w in result["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
    else:
        print(f"(L={cfg.num_levels}, p={cfg.pooling_factor}, K={cfg.topk}) is not valid at "
              f"N={args.seq_len:,}; valid alternatives follow")
    if args.suggest:
        print(format_suggestions(result["suggestions"], result["target_ratio"]))
    return 0
