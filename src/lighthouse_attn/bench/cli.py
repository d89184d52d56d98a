"""`lighthouse-attn bench WHAT`: one module per benchmark, each with add_arguments and main."""

from __future__ import annotations

import argparse
import importlib

# name -> (module with add_arguments(parser) and main(args) -> int, one-line help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "attention": ("lighthouse_attn.bench.attention",
                  "one layer: Lighthouse vs dense SDPA, per-stage breakdown and memory"),
    "train": ("lighthouse_attn.bench.train",
              "training steps/s of a model: stage 1 (Lighthouse) vs dense SDPA"),
    "hf": ("lighthouse_attn.bench.hf",
           "HF LlamaForCausalLM training steps: Lighthouse stage 1 vs all-SDPA"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="WHAT", required=True)
    for name, (module, help_) in BENCHMARKS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_,
                                                                     description=help_))


def main(args: argparse.Namespace) -> int:
    return importlib.import_module(BENCHMARKS[args.bench][0]).main(args)
