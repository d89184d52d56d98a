"""`lighthouse-attn bench WHAT`: GPU benchmarks against dense SDPA (``attention``: one layer;
``train``: training steps of a model; ``hf``: a Hugging Face Llama's training steps)."""

from __future__ import annotations

import argparse

from ..jsonfile import write_json
from .model import add_model_arguments, build_model_config, model_label
from .options import add_setting_options, given_settings

BENCHMARKS: dict[str, str] = {
    "attention": "one layer: Lighthouse vs dense SDPA, per-stage breakdown and memory",
    "train": "training steps/s of a model: stage 1 (Lighthouse) vs dense SDPA",
    "hf": "HF LlamaForCausalLM training steps: Lighthouse stage 1 vs all-SDPA",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="WHAT", required=True)
    adders = {"attention": _attention_arguments, "train": _train_arguments,
              "hf": _hf_arguments}
    for name, help_ in BENCHMARKS.items():
        adders[name](sub.add_parser(name, help=help_, description=help_))


def main(args: argparse.Namespace) -> int:
    return {"attention": _attention, "train": _train, "hf": _hf}[args.bench](args)


def _attention_arguments(parser: argparse.ArgumentParser) -> None:
    from ..bench.attention import ISSUE_CASES, AttentionBenchSettings

    parser.add_argument("--cases", default=ISSUE_CASES,
                        help="comma-separated N:K[:L[:p]] (default: the issue's cases)")
    parser.add_argument("--seq-lens", default=None,
                        help="comma-separated N, each with --topk (overrides --cases)")
    parser.add_argument("--topk", type=int, default=2048, help="K of --seq-lens (default 2048)")
    parser.add_argument("--num-levels", type=int, default=3,
                        help="L of cases that give none (default 3)")
    parser.add_argument("--pooling-factor", type=int, default=4,
                        help="p of cases that give none (default 4)")
    add_setting_options(parser, AttentionBenchSettings)
    parser.add_argument("--merge", default=None, metavar="A.json,B.json",
                        help="time nothing: merge earlier results of one device into one JSON, "
                             "table and plot (e.g. runs split to fit a time limit)")
    parser.add_argument("--out", default="bench-results/attention",
                        help="directory (or .json file) for the results")


def _attention(args: argparse.Namespace) -> int:
    from ..bench.attention import (
        AttentionBenchSettings,
        benchmark_attention,
        merge_results,
        parse_cases,
        report,
    )
    from ..bench.common import output_path

    if args.merge:
        result = merge_results([p for p in args.merge.split(",") if p])
    else:
        cases = (",".join(f"{n}:{args.topk}" for n in args.seq_lens.split(","))
                 if args.seq_lens else args.cases)
        settings = AttentionBenchSettings(**given_settings(args, AttentionBenchSettings))
        result = benchmark_attention(parse_cases(cases, args.num_levels, args.pooling_factor),
                                     settings)
    report(result, write_json(output_path(args.out, "attention.json"), result))
    return 0


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from ..bench.train import TrainBenchSettings

    add_model_arguments(parser, default_preset="paper-268m")
    add_setting_options(parser, TrainBenchSettings)
    parser.add_argument("--out", default="bench-results",
                        help="JSON file, or a directory for an automatically named one")


def _train(args: argparse.Namespace) -> int:
    from ..bench.train import TrainBenchSettings, benchmark_training, format_table, write_record

    config = build_model_config(args)
    settings = TrainBenchSettings(**given_settings(args, TrainBenchSettings))
    record = benchmark_training(config, settings, model_label(args, config))
    print(format_table(record))
    print(f"wrote {write_record(record, args.out)}")
    ok = all("error" not in r for r in record["results"].values())
    return 0 if ok else 1


def _hf_arguments(parser: argparse.ArgumentParser) -> None:
    from ..bench.hf import HFBenchSettings

    add_setting_options(parser, HFBenchSettings)
    parser.add_argument("--out", default="bench-results/bench-hf.json",
                        help="JSON record (written atomically)")


def _hf(args: argparse.Namespace) -> int:
    from ..bench.hf import HFBenchSettings, bench_config, format_table, run

    record = run(bench_config(HFBenchSettings(**given_settings(args, HFBenchSettings))))
    print(format_table(record))
    write_json(args.out, record)
    print(f"wrote {args.out}")
    return 0
