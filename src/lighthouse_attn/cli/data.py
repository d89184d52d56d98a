"""`lighthouse-attn data prepare`: tokenize a corpus once into shards that training streams."""

from __future__ import annotations

import argparse
import time

from ..data.prepare import DEFAULT_SHARD_TOKENS, HELDOUT, prepare


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = sub.add_parser("prepare", help="tokenize inputs into token shards with a manifest",
                       description="Tokenize text, .jsonl[.gz|.zst] and .parquet inputs into "
                       "memory-mappable token shards with a manifest; train with --data OUT. "
                       "A killed prepare resumes when run again with the same options.")
    p.add_argument("--data", nargs="+", required=True, metavar="PATH",
                   help="files, directories, globs (.txt and other text, .jsonl, .jsonl.gz, "
                        ".jsonl.zst, .parquet)")
    p.add_argument("--out", required=True, help="output directory (new or empty, or an "
                   "unfinished prepare of the same inputs to resume)")
    p.add_argument("--tokenizer", default="bytes", metavar="PATH|bytes",
                   help="a Hugging Face tokenizer.json or a directory holding one, or bytes "
                        "(default)")
    p.add_argument("--sep-token", help="special token between documents (default: the "
                   "tokenizer's end-of-text token)")
    p.add_argument("--text-field", default="text",
                   help="field of .jsonl records, column of parquet files (default: text)")
    p.add_argument("--holdout-fraction", type=float, default=0.0,
                   help=f"share of documents written to OUT/{HELDOUT}/ for --eval-data "
                        "(default 0)")
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS,
                   help=f"most tokens per shard file (default {DEFAULT_SHARD_TOKENS:,})")
    p.add_argument("--dtype", default="auto", choices=["auto", "uint16", "uint32"],
                   help="token storage (auto: uint16 when the vocabulary fits)")
    p.add_argument("--workers", type=int, help="processes (default: every core)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier prepare in --out (other files stay)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    manifest = prepare(args.data, args.out, tokenizer=args.tokenizer, sep_token=args.sep_token,
                       text_field=args.text_field, holdout_fraction=args.holdout_fraction,
                       shard_tokens=args.shard_tokens, dtype=args.dtype, workers=args.workers,
                       overwrite=args.overwrite, progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    mb = sum(i["bytes"] for i in manifest["settings"]["inputs"]) / 1e6
    print(f"prepared {args.out}: {manifest['tokens']:,} tokens in {manifest['documents']:,} "
          f"documents, {len(manifest['shards'])} shard(s) of {manifest['dtype']} "
          f"({mb:,.1f} MB of input in {seconds:.1f} s)")
    if manifest["settings"]["holdout_fraction"] > 0:
        print(f"held out: {args.out}/{HELDOUT} (train with --data {args.out} --eval-data "
              f"{args.out}/{HELDOUT})")
    else:
        print(f"train with --data {args.out}")
    return 0
