"""`lighthouse-attn generate`: continue a prompt with a trained or exported model (dense
attention, KV cache); prints the continuation, then the speed."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .options import add_runtime_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_OR_EXPORT",
                        help="run directory, checkpoint directory, or exported directory")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-file", metavar="FILE", help="prompt read from a UTF-8 file")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="default 256")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="0 for greedy decoding (default 0.8)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus mass (default 0.95)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-stop", action="store_true",
                        help="keep going past the document separator")
    add_runtime_options(parser, precision=False, threads=False)


def main(args: argparse.Namespace) -> int:
    from ..generate import model_tokenizer_at, run_generation, trained_context
    from ..runtime import resolve_device

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})")
    if not (args.temperature >= 0 and 0 < args.top_p <= 1):
        raise ValueError(f"--temperature must be >= 0 and --top-p in (0, 1] (got "
                         f"{args.temperature}, {args.top_p})")
    if args.prompt_file is not None:
        try:
            text = Path(args.prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read --prompt-file {args.prompt_file}: {err}") from None
    else:
        text = args.prompt
    tokenizer = model_tokenizer_at(args.checkpoint)
    prompt = tokenizer.encode(text)
    if not prompt:
        raise ValueError("the prompt is empty: give at least one character")
    device = resolve_device(args.device)
    trained = trained_context(args.checkpoint)
    if trained is not None and len(prompt) + args.max_new_tokens > trained:
        print(f"warning: prompt ({len(prompt):,} tokens) plus --max-new-tokens "
              f"({args.max_new_tokens:,}) exceed the {trained:,} tokens the model was trained "
              "on: text beyond that is length extrapolation", file=sys.stderr)
    t0 = time.perf_counter()
    new = run_generation(args.checkpoint, prompt, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                         stop=not args.no_stop, device=device, sep_id=tokenizer.sep_id)
    dt = time.perf_counter() - t0
    print(text + tokenizer.decode(new, sep="\n"))
    print(f"{len(new)} tokens in {dt:.2f} s ({len(new) / dt:.1f} tokens/s, {device.type}, "
          f"prompt {len(prompt)} tokens)", file=sys.stderr)
    return 0
