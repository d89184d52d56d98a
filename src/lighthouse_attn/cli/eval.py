"""`lighthouse-attn eval niah|loss|leak|recall`: passkey retrieval, loss by position, whether a
checkpoint reads the future, and how much attention mass its selection keeps."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

from ..config import SCORERS
from ..data import TOKENIZER, open_sequences
from ..eval.forward import MEMORY_FRACTION, bytes_per_sequence, fit_batch, free_memory
from ..eval.leak import measure_leak
from ..eval.loading import EvalCheckpoint, load_checkpoint
from ..eval.passkey import DEFAULT_CONTEXTS, DEFAULT_DEPTHS, MIN_CONTEXT, plan_contexts, run_passkey
from ..eval.plots import plot_passkey, plot_position_loss
from ..eval.position_loss import GAIN_WINDOW, loss_by_position
from ..jsonfile import write_json
from ..models.memory import gib
from ..runtime import resolve_device, set_cpu_threads, uses_bf16
from .options import add_runtime_options, argument_group

NIAH_HELP = "passkey retrieval: a digit hidden at several depths and context lengths"
LOSS_HELP = "held-out loss overall and by token position, for one or more checkpoints"
LEAK_HELP = ("does a checkpoint read the future? replace the text after random cuts and "
             "measure the change before them (zero for a causal model)")


# --------------------------------------------------------------------------- shared
def add_runtime_arguments(parser: argparse.ArgumentParser, out_default: str = "eval") -> None:
    """``--device``, ``--precision``, ``--threads``, ``--memory-gib``, ``--no-progress``,
    ``--out``."""
    add_runtime_options(parser, title="runtime and output")
    g = argument_group(parser, "runtime and output")
    g.add_argument("--memory-gib", type=float,
                   help="memory the forward passes may use beyond the weights (default: "
                        f"{100 * MEMORY_FRACTION:.0f}%% of the device's free memory after loading)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--out", default=out_default,
                   help=f"directory for the JSON and PNG files (default: {out_default}/)")


def setup_runtime(args: argparse.Namespace) -> torch.device:
    """The device (``ValueError`` for CUDA without a GPU); sets the CPU threads."""
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1 (got {args.threads})")
    if getattr(args, "memory_gib", None) is not None and not args.memory_gib > 0:
        raise ValueError(f"--memory-gib must be > 0 (got {args.memory_gib})")
    device = resolve_device(args.device)
    if device.type == "cpu":
        set_cpu_threads(args.threads)
    return device


def memory_budget(args: argparse.Namespace, device: torch.device) -> int:
    """Bytes of activations the forward passes may use (call after loading the models)."""
    if args.memory_gib is not None:
        return int(args.memory_gib * 2**30)
    return int(MEMORY_FRACTION * free_memory(device))


def parse_lengths(text: str, flag: str) -> list[int]:
    """``"4K,8192,16k"`` -> ``[4096, 8192, 16384]`` (K = 1024)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            out.append(int(part[:-1]) * 1024 if part[-1:] in "kK" and part[:-1] else int(part))
        except ValueError:
            raise ValueError(f"{flag} must be comma-separated token counts such as "
                             f"'4K,8K,16384' (K = 1024); got {text!r}") from None
    return out


def parse_numbers(text: str, flag: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated numbers such as '0,50,100'; got "
                         f"{text!r}") from None


def file_stem(text: str) -> str:
    """``text`` with every character other than letters, digits, ``.``, ``-`` and ``_``
    replaced by ``_`` (names and labels become file names)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def describe(ckpt: EvalCheckpoint) -> dict:
    """What the output files record about a checkpoint."""
    return {"name": ckpt.name, "path": ckpt.info["path"], "step": ckpt.info["step"],
            "trained_attention": ckpt.info["trained_attention"],
            "trained_seq_len": ckpt.trained_seq_len, "model": ckpt.info["model_config"]}


# --------------------------------------------------------------------------- niah
def add_niah_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR",
                        help="run directory (its final model, else its newest checkpoint) or "
                             "checkpoint directory")
    parser.add_argument("--attention", choices=["dense", "lighthouse"], default="dense",
                        help="dense: the served model (default); lighthouse: probe a stage-1 "
                             "checkpoint as it trained")
    parser.add_argument("--contexts", default=",".join(str(c) for c in DEFAULT_CONTEXTS),
                        help="prompt lengths in tokens (bytes), K = 1024 (default: 4K, 8K, "
                             "16K, 32K, 64K, 96K)")
    parser.add_argument("--depths", default=",".join(str(d) for d in DEFAULT_DEPTHS),
                        help="needle depths in percent of the filler (default: "
                             "0,15,30,50,70,85,100)")
    parser.add_argument("--trials", type=int, default=10, help="seeded trials per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8,
                        help="prompts per forward pass (lowered per context to fit memory)")
    parser.add_argument("--max-context", type=int,
                        help="skip longer contexts (default: the run's training seq_len; "
                             "raise it to test length extrapolation)")
    add_runtime_arguments(parser)


def _fallback_contexts(max_context: int) -> list[int]:
    return sorted({c for c in (max_context // 8, max_context // 4, max_context // 2,
                               max_context) if c >= MIN_CONTEXT})


def niah_main(args: argparse.Namespace) -> int:
    contexts = parse_lengths(args.contexts, "--contexts")
    depths = parse_numbers(args.depths, "--depths")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if args.max_context is not None and args.max_context < MIN_CONTEXT:
        raise ValueError(f"--max-context must be >= {MIN_CONTEXT}, the shortest passkey "
                         f"prompt (got {args.max_context})")
    device = setup_runtime(args)
    ckpt = load_checkpoint(args.checkpoint, args.attention, device)
    if ckpt.tokenizer is not TOKENIZER:
        raise ValueError(f"{ckpt.name} uses a tokenizer file; the passkey prompts are written "
                         "in bytes for byte-level models: evaluate it with eval loss instead")
    max_context = args.max_context or ckpt.trained_seq_len
    notes = []
    if max_context is None:
        notes.append("the run's training seq_len is unknown (no run config.json): contexts "
                     "are capped by memory only")
    plan = dict(config=ckpt.model.config, attention=args.attention,
                batch_size=args.batch_size, memory_budget=memory_budget(args, device),
                max_context=max_context, trained_seq_len=ckpt.trained_seq_len,
                bf16=uses_bf16(args.precision, device))
    batches, skipped = plan_contexts(contexts=contexts, **plan)
    defaults = args.contexts == ",".join(str(c) for c in DEFAULT_CONTEXTS)
    if not batches and defaults and max_context is not None and \
            all(s["kind"] == "max-context" for s in skipped):
        fallback = _fallback_contexts(max_context)
        notes.append(f"every default context is longer than --max-context {max_context:,}; "
                     f"evaluating {', '.join(f'{c:,}' for c in fallback)} instead")
        batches, more = plan_contexts(contexts=fallback, **plan)
        skipped += more
    for note in notes:
        print(f"note: {note}")
    if not batches:
        reasons = "; ".join(f"{s['context']:,}: {s['reason']}" for s in skipped)
        raise ValueError(f"no context length can be evaluated ({reasons})")

    t0 = time.perf_counter()
    result = run_passkey(ckpt.model, list(batches), depths, trials=args.trials,
                         seed=args.seed, batch_size=batches, device=device,
                         precision=args.precision, progress=not args.no_progress,
                         skipped=skipped)
    elapsed = time.perf_counter() - t0
    print(f"passkey retrieval: {ckpt.name} ({args.attention} attention)")
    print(result.table())

    out = Path(args.out)
    stem = file_stem(f"niah_{ckpt.name}")
    write_json(out / f"{stem}.json", {
        "checkpoint": describe(ckpt), "attention": args.attention, "max_context": max_context,
        "device": str(device), "precision": args.precision, "elapsed_s": elapsed,
        "notes": notes, **result.to_dict()})
    plot_passkey(result, out / f"{stem}.png", f"passkey retrieval: {ckpt.name} (step "
                 f"{ckpt.info['step']}, {args.attention} attention)")
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.png')}")
    return 0


# --------------------------------------------------------------------------- loss
def add_loss_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, action="append", metavar="RUN_DIR",
                        help="run or checkpoint directory; repeat to overlay several")
    parser.add_argument("--label", action="append",
                        help="legend name per --checkpoint, in order (default: run names)")
    parser.add_argument("--data", required=True, nargs="+", metavar="PATH",
                        help="held-out data: a prepared directory, or text files, directories, "
                             "globs, .jsonl, .parquet")
    parser.add_argument("--text-field", default="text",
                        help="field of .jsonl records, column of parquet files")
    parser.add_argument("--seq-len", type=int,
                        help="tokens per sequence (default: the longest training seq_len of "
                             "the checkpoints)")
    parser.add_argument("--max-sequences", type=int, default=32,
                        help="score the first this many sequences of the data (default: 32)")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="sequences per forward pass (lowered to fit memory)")
    parser.add_argument("--attention", choices=["dense", "lighthouse"], default="dense",
                        help="dense (default) or lighthouse (a stage-1 checkpoint as trained)")
    add_runtime_arguments(parser)


def loss_main(args: argparse.Namespace) -> int:
    if args.label and len(args.label) != len(args.checkpoint):
        raise ValueError(f"give one --label per --checkpoint ({len(args.checkpoint)} "
                         f"checkpoints, {len(args.label)} labels)")
    if args.batch_size < 1 or args.max_sequences < 1:
        raise ValueError("--batch-size and --max-sequences must be >= 1")
    if args.seq_len is not None and args.seq_len < 2:
        raise ValueError(f"--seq-len must be >= 2 (got {args.seq_len})")
    device = setup_runtime(args)
    ckpts = [load_checkpoint(path, args.attention, device) for path in args.checkpoint]
    for i, label in enumerate(args.label or []):
        ckpts[i].name = label
    seq_len = args.seq_len or max((c.trained_seq_len or 0) for c in ckpts) or None
    if seq_len is None:
        raise ValueError("the checkpoints' training seq_len is unknown (no run config.json); "
                         "pass --seq-len")
    budget, bf16 = memory_budget(args, device), uses_bf16(args.precision, device)
    for c in ckpts:
        if c.trained_seq_len is not None and seq_len > c.trained_seq_len:
            print(f"note: {c.name} trained at {c.trained_seq_len:,} tokens; positions beyond "
                  f"that (up to {seq_len:,}) measure length extrapolation", file=sys.stderr)
    if len({json.dumps(c.tokenizer.identity(), sort_keys=True) for c in ckpts}) > 1:
        raise ValueError("the checkpoints use different tokenizers, so their losses are not "
                         "comparable: compare checkpoints of one tokenizer")
    data = open_sequences(args.data, seq_len, ckpts[0].tokenizer, args.text_field).sequences
    results = []
    for ckpt in ckpts:
        lh = ckpt.model.config.lighthouse
        if args.attention == "lighthouse" and ckpt.model.config.lighthouse_layer_indices and \
                not (lh.short_seq == "dense" and lh.is_short(seq_len)):
            lh.validate(seq_len)
        per = bytes_per_sequence(ckpt.model.config, seq_len, attention=args.attention,
                                 bf16=bf16, full_logits=True)
        batch = fit_batch(per, budget, args.batch_size)
        if batch == 0:
            raise ValueError(f"one sequence of {seq_len:,} tokens needs about {gib(per)} for "
                             f"{ckpt.name}, more than the {gib(budget)} available "
                             "(--memory-gib); lower --seq-len")
        results.append(loss_by_position(
            ckpt.model, data, name=ckpt.name, max_sequences=args.max_sequences,
            batch_size=batch, device=device, precision=args.precision,
            gain_window=GAIN_WINDOW if args.attention == "dense" else None,
            progress=not args.no_progress))
    print(f"loss by position ({args.attention} attention, {results[0].sequences} x "
          f"{seq_len:,} tokens of {', '.join(args.data)})")
    print(_loss_table(results))

    out = Path(args.out)
    stem = file_stem("loss_" + "_vs_".join(r.name for r in results))
    write_json(out / f"{stem}.json", {
        "data": args.data, "seq_len": seq_len, "attention": args.attention,
        "device": str(device), "precision": args.precision,
        "checkpoints": [describe(c) for c in ckpts],
        "results": [r.to_dict() for r in results]})
    plot_position_loss(results, out / f"{stem}.png",
                       f"held-out loss by position ({args.attention} attention)")
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.png')}")
    return 0


def _loss_table(results) -> str:
    """Loss per position bucket, overall, per context range, and the long-context gain: one
    column per checkpoint."""
    width = max(12, *(len(r.name) + 2 for r in results))

    def row(label: str, cells) -> str:
        return f"{label:>18}" + "".join(f"{c:>{width}}" for c in cells)

    names = [r.name for r in results]
    lines = [row("positions", names)]
    for i, b in enumerate(results[0].buckets):
        lines.append(row(f"{b['start']:,} - {b['end'] - 1:<8,}",
                         [f"{r.buckets[i]['loss']:.4f}" for r in results]))
    lines.append(row("all", [f"{r.loss:.4f}" for r in results]))
    lines.append(row("context range", names))
    for i, rng in enumerate(results[0].ranges):
        lines.append(row(rng["label"], [f"{r.ranges[i]['loss']:.4f}" for r in results]))
    gains = [r.long_context for r in results]
    if any(gains):
        window = next(g["window"] for g in gains if g)
        lines.append(row("long-context gain", [f"{g['gain']:+.4f}" if g else "-"
                                                for g in gains]))
        lines.append(f"(gain: loss of the last {window:,} positions with only the {window:,} "
                     "tokens before them, minus with the full context; > 0: distant text "
                     "helps)")
    else:
        lines.append(f"(no long-context gain: it needs dense attention and seq_len >= "
                     f"{2 * GAIN_WINDOW:,})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- leak
def add_leak_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR",
                        help="run or checkpoint directory (e.g. the stage-1 checkpoint)")
    parser.add_argument("--data", required=True, nargs="+", metavar="PATH",
                        help="text to cut: a prepared directory, or files, directories, "
                             "globs, .jsonl, .parquet")
    parser.add_argument("--text-field", default="text", help="field of .jsonl records")
    parser.add_argument("--attention", choices=["lighthouse", "dense"], default="lighthouse",
                        help="lighthouse (default: the model as stage 1 trains it) or dense "
                             "(a control: exactly zero)")
    parser.add_argument("--seq-len", type=int,
                        help="tokens per sequence (default: the run's training seq_len)")
    parser.add_argument("--sequences", type=int, default=4, help="sequences (default 4)")
    parser.add_argument("--cuts", type=int, default=4, help="random cuts per sequence")
    parser.add_argument("--seed", type=int, default=0)
    add_runtime_arguments(parser)


def leak_main(args: argparse.Namespace) -> int:
    if args.sequences < 1 or args.cuts < 1:
        raise ValueError("--sequences and --cuts must be >= 1")
    device = setup_runtime(args)
    ckpt = load_checkpoint(args.checkpoint, args.attention, device)
    seq_len = args.seq_len or ckpt.trained_seq_len
    if seq_len is None:
        raise ValueError("the checkpoint's training seq_len is unknown (no run config.json); "
                         "pass --seq-len")
    if seq_len < 4:
        raise ValueError(f"--seq-len must be >= 4 (got {seq_len})")
    lh = ckpt.model.config.lighthouse
    if args.attention == "lighthouse" and ckpt.model.config.lighthouse_layer_indices:
        lh.validate(seq_len)
    data = open_sequences(args.data, seq_len, ckpt.tokenizer, args.text_field).sequences
    result = measure_leak(ckpt.model, data, sequences=args.sequences, cuts=args.cuts,
                          seed=args.seed, device=device, precision=args.precision,
                          progress=not args.no_progress)
    mode = f"{args.attention} attention" + (f", {lh.selection} selection"
                                            if args.attention == "lighthouse" else "")
    print(f"future leak of {ckpt.name} ({mode}), {result.sequences} sequences x "
          f"{result.cuts_per_sequence} cuts of {seq_len:,} tokens:")
    print(f"  loss change before the cut   {result.mean_loss_change:+.6f} nats/token "
          "(> 0: the prefix was predicted better with its real future)")
    print(f"  largest logit change         {result.max_logit_change:.3g}")
    print(f"  positions whose logits moved {100 * result.changed_fraction:.1f}%")
    print("  verdict: " + ("no output before a cut depends on the text after it"
                           if result.max_logit_change == 0 else
                           "outputs before the cuts depend on the text after them"))
    out = Path(args.out)
    path = out / f"{file_stem('leak_' + ckpt.name + '_' + args.attention)}.json"
    write_json(path, {"checkpoint": describe(ckpt), "attention": args.attention,
                      "seq_len": seq_len, "data": args.data, "device": str(device),
                      "precision": args.precision, **result.to_dict()})
    print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- recall
RECALL_HELP = ("how much dense attention mass each Lighthouse layer's selection keeps exactly, "
               "beside an oracle and a random selection of the same budget")


def add_recall_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR",
                        help="run directory (its final model, else its newest checkpoint) or "
                             "checkpoint directory")
    parser.add_argument("--data", required=True, nargs="+", metavar="PATH",
                        help="held-out data: a prepared directory, or files, directories, "
                             "globs, .jsonl, .parquet")
    parser.add_argument("--text-field", default="text", help="field of .jsonl records")
    parser.add_argument("--seq-len", type=int,
                        help="tokens per sequence (default: the run's training seq_len)")
    parser.add_argument("--sequences", type=int, default=2, help="sequences (default 2)")
    parser.add_argument("--attention", choices=["lighthouse", "dense"], default="lighthouse",
                        help="attention of the layers before the measured one (default: "
                             "lighthouse, the model as stage 1 trains it)")
    parser.add_argument("--topks", help="budgets for the recall-against-K plot of one layer, "
                                        "e.g. 512,1024,2048 (default: K/2, K, 2K where valid)")
    parser.add_argument("--plot-layer", type=int,
                        help="the layer of that plot (default: the first Lighthouse layer)")
    parser.add_argument("--scorer", choices=list(SCORERS),
                        help="measure this scorer's selection instead of the checkpoint's (on "
                             "the same q, k, v)")
    parser.add_argument("--selection", choices=["paper", "causal"],
                        help="measure this selection rule instead of the checkpoint's")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random selection")
    add_runtime_arguments(parser)


def recall_main(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..eval.plots import plot_recall
    from ..eval.recall import layer_recall
    from ..eval.selection import hf_layer_qkv, layer_qkv
    from ..models import Llama

    if args.sequences < 1:
        raise ValueError(f"--sequences must be >= 1 (got {args.sequences})")
    device = setup_runtime(args)
    ckpt = load_checkpoint(args.checkpoint, args.attention, device)

    def capture(ids, layer):  # q, k, v and scale; an --hf-config run's earlier layers: SDPA
        if isinstance(ckpt.model, Llama):
            return (*layer_qkv(ckpt.model, ids, layer), None)
        return hf_layer_qkv(ckpt.model, ids, layer)
    config = ckpt.model.config
    layers = list(config.lighthouse_layer_indices)
    if not layers:
        raise ValueError(f"{ckpt.name} has no Lighthouse layer (all layers are dense)")
    overrides = {f: getattr(args, f) for f in ("scorer", "selection")
                 if getattr(args, f) is not None}
    lh = replace(config.lighthouse, **overrides)
    seq_len = args.seq_len or ckpt.trained_seq_len
    if seq_len is None:
        raise ValueError("the checkpoint's training seq_len is unknown (no run config.json); "
                         "pass --seq-len")
    lh.validate(seq_len)
    plot_layer = layers[0] if args.plot_layer is None else args.plot_layer
    if plot_layer not in layers:
        raise ValueError(f"--plot-layer {plot_layer} is not a Lighthouse layer; choose one of "
                         f"{layers}")
    if args.topks:
        topks = parse_lengths(args.topks, "--topks")
    else:
        topks = [k for k in (lh.topk // 2, lh.topk, 2 * lh.topk) if k >= 128 and k % 128 == 0]
    budgets = []
    for k in topks:
        try:
            candidate = replace(lh, topk=k)
            candidate.validate(seq_len)
        except ValueError as err:
            print(f"note: K={k:,} skipped: {err}", file=sys.stderr)
            continue
        budgets.append(candidate)
    data = open_sequences(args.data, seq_len, ckpt.tokenizer, args.text_field).sequences
    inputs, _ = data.batch(list(range(min(args.sequences, len(data)))))
    inputs = inputs.to(device)
    rows, curve = [], []
    t0 = time.perf_counter()
    for layer in layers:
        q, k, v, scale = capture(inputs, layer)
        r = layer_recall(q, k, v, lh, seed=args.seed, scale=scale)
        rows.append({"layer": layer, **r})
        if layer == plot_layer:
            curve = [{"topk": b.topk, **layer_recall(q, k, v, b, seed=args.seed, scale=scale)}
                     for b in budgets]
    elapsed = time.perf_counter() - t0
    print(f"recall of dense attention mass: {ckpt.name}, L={lh.num_levels} p="
          f"{lh.pooling_factor} K={lh.topk:,} {lh.scorer} scorer, {lh.selection} selection; "
          f"{len(inputs)} x {seq_len:,} tokens of {', '.join(args.data)}")
    print(f"{'layer':>6}{'selection':>12}{'oracle':>10}{'random':>10}   (share kept exactly; "
          "the rest only through pooled entries)")
    for row in rows:
        print(f"{row['layer']:>6}{row['selection']['exact']:>12.3f}"
              f"{row['oracle']['exact']:>10.3f}{row['random']['exact']:>10.3f}")
    out = Path(args.out)
    stem = file_stem("_".join([f"recall_{ckpt.name}", *overrides.values()]))
    write_json(out / f"{stem}.json", {
        "checkpoint": describe(ckpt), "seq_len": seq_len, "sequences": len(inputs),
        "data": args.data, "attention": args.attention, "lighthouse": lh.to_dict(),
        "device": str(device), "elapsed_s": elapsed, "layers": rows,
        "recall_vs_topk": {"layer": plot_layer, "points": curve}})
    written = [str(out / f"{stem}.json")]
    if curve:
        plot_recall(curve, out / f"{stem}.png", f"{ckpt.name}, layer {plot_layer}: dense "
                    "attention mass kept exactly against the budget")
        written.append(str(out / f"{stem}.png"))
    print(f"wrote {' and '.join(written)}")
    return 0


# --------------------------------------------------------------------------- command
SUBCOMMANDS = {"niah": (add_niah_arguments, niah_main, NIAH_HELP),
               "loss": (add_loss_arguments, loss_main, LOSS_HELP),
               "leak": (add_leak_arguments, leak_main, LEAK_HELP),
               "recall": (add_recall_arguments, recall_main, RECALL_HELP)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    for name, (add, _, help_) in SUBCOMMANDS.items():
        add(sub.add_parser(name, help=help_, description=help_))


def main(args: argparse.Namespace) -> int:
    return SUBCOMMANDS[args.eval_command][1](args)
