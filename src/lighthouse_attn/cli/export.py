"""`lighthouse-attn export`: the trained model as a transformers checkpoint with its
tokenizer."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR",
                        help="run directory (its final dense model, else its newest "
                             "checkpoint) or checkpoint directory")
    parser.add_argument("out", metavar="OUT_DIR", help="directory to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT_DIR if it holds an earlier export (nothing else is "
                             "ever replaced)")


def main(args: argparse.Namespace) -> int:
    from ..export import export

    result = export(args.run, args.out, overwrite=args.overwrite)
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"exported {result['source']} (step {result['step']}) to {args.out}: "
          f"{result['architecture']}, {result['parameters'] / 1e6:.2f}M parameters, with "
          f"{result['tokenizer']}")
    print(f"load it with AutoModelForCausalLM.from_pretrained({str(args.out)!r}) and "
          f"AutoTokenizer.from_pretrained({str(args.out)!r})")
    return 0
