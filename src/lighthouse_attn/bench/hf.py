"""`lighthouse-attn bench hf`: training steps of a Hugging Face ``LlamaForCausalLM`` in stage 1
(Lighthouse through :mod:`lighthouse_attn.hf`) against the same model on all-SDPA.

Both variants are built the same way (``from_config``, random init, no download) with the
shapes of the paper-268m preset, activation checkpointing on, and timed over steady-state
steps (forward, backward, AdamW) on one fixed random batch. Prints a table and writes a JSON
record (device, versions, config, per-step times) to ``--out``. The defaults (N = 98,304;
per variant 2 warm-up steps, then 5 timed steps or 150 s of them, whichever ends first) fit in
about 6 minutes on one H100.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

import torch

from ..config import LighthouseConfig
from ..environment import device_name, versions
from ..jsonfile import write_json
from .common import sync

PAPER_530M = dict(hidden_size=1024, num_layers=30, heads=8, kv_heads=8, intermediate_size=1536,
                  vocab_size=257, rope_theta=10000.0)
"""The paper-268m preset's shapes (vocab: 256 bytes + 1 separator; untied embeddings)."""
VARIANTS = ("lighthouse", "sdpa")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    m = parser.add_argument_group("model (defaults: the paper-268m preset)")
    m.add_argument("--hidden-size", type=int, default=PAPER_530M["hidden_size"])
    m.add_argument("--num-layers", type=int, default=PAPER_530M["num_layers"])
    m.add_argument("--heads", type=int, default=PAPER_530M["heads"])
    m.add_argument("--kv-heads", type=int, default=PAPER_530M["kv_heads"])
    m.add_argument("--intermediate-size", type=int, default=PAPER_530M["intermediate_size"])
    m.add_argument("--vocab-size", type=int, default=PAPER_530M["vocab_size"])
    m.add_argument("--rope-theta", type=float, default=PAPER_530M["rope_theta"])
    lh = parser.add_argument_group("Lighthouse (stage 1)")
    lh.add_argument("--num-levels", type=int, default=3)
    lh.add_argument("--pooling-factor", type=int, default=4)
    lh.add_argument("--topk", type=int, default=1536)
    lh.add_argument("--scorer", default="norm", choices=("norm", "dilated"))
    lh.add_argument("--gqa", default="expand", choices=("expand", "shared"))
    lh.add_argument("--selection", default="paper", choices=("paper", "causal"))
    lh.add_argument("--dense-layers", default="0,1,-2,-1",
                    help="comma-separated layers kept on SDPA in stage 1 ('' for none)")
    r = parser.add_argument_group("run")
    r.add_argument("--seq-len", type=int,
                   help="tokens per sequence (default on a GPU: 98,304; on a CPU give one)")
    r.add_argument("--batch-size", type=int, default=1)
    r.add_argument("--warmup-steps", type=int, default=2)
    r.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    r.add_argument("--dtype", default="bf16", choices=tuple(DTYPES))
    r.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cuda', 'cpu'")
    r.add_argument("--time-budget", type=float, default=150.0,
                   help="seconds of timed steps per variant; fewer steps are timed past it")
    r.add_argument("--lr", type=float, default=1e-4)
    r.add_argument("--no-checkpointing", action="store_true",
                   help="keep activations instead of recomputing them")
    r.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated subset of 'lighthouse,sdpa' (both give the ratio)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", default="bench-results/bench-hf.json",
                   help="JSON record (written atomically)")


def main(args: argparse.Namespace) -> int:
    config = _bench_config(args)
    result = run(config)
    print(format_table(result))
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


def run(config: dict) -> dict:
    """Time every variant of ``config`` (from :func:`_bench_config`); returns the record."""
    device = torch.device(config["device"])
    results = {}
    for variant in config["variants"]:
        try:
            results[variant] = _time_variant(config, variant, device)
        except torch.cuda.OutOfMemoryError as err:  # keep the other variant's numbers
            results[variant] = {"error": f"out of memory: {str(err).splitlines()[0]}"}
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    record = {"benchmark": "hf", "device": device_name(device), "versions": versions(),
              "config": config, "results": results}
    lh, dense = results.get("lighthouse", {}), results.get("sdpa", {})
    if "median_step_s" in lh and "median_step_s" in dense:
        record["speedup"] = dense["median_step_s"] / lh["median_step_s"]
    return record


def format_table(record: dict) -> str:
    """The record as a small text table."""
    c = record["config"]
    lh = c["lighthouse"]
    lines = [
        (f"HF LlamaForCausalLM train step: N={c['seq_len']:,} B={c['batch_size']} {c['dtype']} "
         f"layers={c['model']['num_layers']} d={c['model']['hidden_size']} "
         f"checkpointing={'on' if c['checkpointing'] else 'off'}  [{record['device']}]"),
        (f"stage 1: L={lh['num_levels']} p={lh['pooling_factor']} K={lh['topk']} "
         f"scorer={lh['scorer']}, Lighthouse in {len(c['lighthouse_layers'])} of "
         f"{c['model']['num_layers']} layers (dense: {c['dense_layers']})"),
        f"{'variant':<12}{'median step':>14}{'tokens/s':>14}{'peak memory':>14}",
    ]
    for variant, r in record["results"].items():
        if "error" in r:
            lines.append(f"{variant:<12}{r['error']}")
            continue
        peak = r["peak_memory_bytes"]
        mem = "n/a" if peak is None else f"{peak / 2**30:.2f} GiB"
        lines.append(f"{variant:<12}{r['median_step_s']:>12.3f} s{r['tokens_per_s']:>14,.0f}"
                     f"{mem:>14}  ({r['timed_steps']} timed steps)")
    if "speedup" in record:
        lines.append(f"speedup (sdpa step / lighthouse step): {record['speedup']:.2f}x")
    return "\n".join(lines)


def _bench_config(args: argparse.Namespace) -> dict:
    """Validated settings of the run as a JSON-ready dict; ``ValueError`` on bad input."""
    from .common import default_seq_len

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available; "
                         "use --device cpu")
    args.seq_len = default_seq_len(args.seq_len, torch.device(device).type, "bench hf")
    for name in ("hidden_size", "num_layers", "heads", "kv_heads", "intermediate_size",
                 "vocab_size", "seq_len", "batch_size", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    if args.time_budget <= 0:
        raise ValueError(f"--time-budget must be > 0 seconds (got {args.time_budget})")
    if args.warmup_steps < 0:
        raise ValueError(f"--warmup-steps must be >= 0 (got {args.warmup_steps})")
    if args.hidden_size % args.heads or args.heads % args.kv_heads:
        raise ValueError(f"--hidden-size ({args.hidden_size}) must be a multiple of --heads "
                         f"({args.heads}), and --heads a multiple of --kv-heads ({args.kv_heads})")
    variants = [v for v in args.variants.split(",") if v]
    if not variants or set(variants) - set(VARIANTS) or len(set(variants)) != len(variants):
        raise ValueError(f"--variants must list some of {', '.join(VARIANTS)} once each; "
                         f"got {args.variants!r}")
    try:
        dense_layers = [int(x) for x in args.dense_layers.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--dense-layers must be comma-separated integers, e.g. 0,1,-2,-1; "
                         f"got {args.dense_layers!r}") from None
    n = args.num_layers
    bad = [i for i in dense_layers if not -n <= i < n]
    if bad:
        raise ValueError(f"--dense-layers {bad} out of range for {n} layers (0..{n - 1} or "
                         f"-{n}..-1)")
    lighthouse = LighthouseConfig(num_levels=args.num_levels, pooling_factor=args.pooling_factor,
                                  topk=args.topk, scorer=args.scorer, gqa=args.gqa,
                                  selection=args.selection)
    lighthouse_layers = sorted(set(range(n)) - {i % n for i in dense_layers})
    if "lighthouse" in variants:
        lighthouse.validate(args.seq_len)
        if not lighthouse_layers:
            raise ValueError(f"--dense-layers {args.dense_layers!r} leave no Lighthouse layer in "
                             f"a {n}-layer model; keep fewer layers dense")
    model = {k: getattr(args, k) for k in PAPER_530M}
    return {"model": model, "lighthouse": lighthouse.to_dict(), "dense_layers": dense_layers,
            "lighthouse_layers": lighthouse_layers,
            "seq_len": args.seq_len, "batch_size": args.batch_size,
            "warmup_steps": args.warmup_steps, "steps": args.steps,
            "time_budget_s": args.time_budget, "dtype": args.dtype,
            "device": device, "lr": args.lr, "checkpointing": not args.no_checkpointing,
            "variants": variants, "seed": args.seed,
            "gathered_length": (lighthouse.gathered_length(args.seq_len)
                                if "lighthouse" in variants else None)}


def _build_model(config: dict, variant: str, device: torch.device):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from .. import hf

    m = config["model"]
    hf_config = LlamaConfig(
        hidden_size=m["hidden_size"], num_hidden_layers=m["num_layers"],
        num_attention_heads=m["heads"], num_key_value_heads=m["kv_heads"],
        intermediate_size=m["intermediate_size"], vocab_size=m["vocab_size"],
        rope_theta=m["rope_theta"], rms_norm_eps=1e-5, tie_word_embeddings=False,
        max_position_embeddings=config["seq_len"], use_cache=False)
    torch.manual_seed(config["seed"])
    model = AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa",
                                             dtype=DTYPES[config["dtype"]]).to(device)
    if variant == "lighthouse":
        hf.configure(model, LighthouseConfig(**config["lighthouse"]), config["dense_layers"])
    if config["checkpointing"]:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:  # transformers >= 5.23
            enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable({"use_reentrant": False})
    return model.train()


def _time_variant(config: dict, variant: str, device: torch.device) -> dict:
    from tqdm.auto import tqdm

    model = _build_model(config, variant, device)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], fused=device.type == "cuda")
    g = torch.Generator().manual_seed(config["seed"] + 1)
    tokens = torch.randint(0, config["model"]["vocab_size"],
                           (config["batch_size"], config["seq_len"]), generator=g).to(device)
    times, losses = [], []
    warmup, budget = config["warmup_steps"], config["time_budget_s"]
    bar = tqdm(total=warmup + config["steps"], desc=f"bench hf {variant}", file=sys.stderr,
               disable=None)
    while len(times) < warmup + config["steps"]:
        if len(times) == warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync()
        start = time.perf_counter()
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
        bar.update()
        if len(times) > warmup and sum(times[warmup:]) > budget:
            break  # keep the whole run inside one device call
    bar.close()
    timed = times[warmup:]
    median = statistics.median(timed)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    del model, opt
    return {"median_step_s": median,
            "tokens_per_s": config["batch_size"] * config["seq_len"] / median,
            "peak_memory_bytes": peak, "timed_steps": len(timed),
            "stopped_by_time_budget": len(timed) < config["steps"],
            "step_times_s": times, "losses": losses}


