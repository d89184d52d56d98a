"""The `lighthouse-attn` command line: one module per subcommand, imported when it runs.

Every ``argparse`` of the package lives in this folder; the library is used from Python
without it."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from typing import NoReturn

from ..process_exit import exit_process
from ..progress import quiet_libraries
from .options import with_flags

# name -> (module with add_arguments(parser) and main(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("lighthouse_attn.cli.plan", "tiles, gathered length, FLOPs and memory of a config"),
    "bench": ("lighthouse_attn.cli.bench", "GPU benchmarks against dense SDPA"),
    "train": ("lighthouse_attn.cli.train",
              "two-stage pretraining: Lighthouse, then dense recovery (no options: the demo)"),
    "data": ("lighthouse_attn.cli.data",
             "prepare a corpus: tokenize inputs once into shards that training streams"),
    "compare": ("lighthouse_attn.cli.compare",
                "does Lighthouse pay off? dense vs Lighthouse-then-dense over paired seeds"),
    "eval": ("lighthouse_attn.cli.eval",
             "evaluate checkpoints: passkey retrieval (niah), loss by position (loss), "
             "future leak (leak), attention mass the selection keeps (recall)"),
    "export": ("lighthouse_attn.cli.export",
               "the trained model as a transformers checkpoint with its tokenizer"),
    "generate": ("lighthouse_attn.cli.generate",
                 "continue a prompt with a trained or exported model (dense, KV cache)"),
    "inspect": ("lighthouse_attn.cli.inspect",
                "draw what stage-1 selection picks in one layer for a text"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (for its options), so that
    ``lighthouse-attn --help`` and every subcommand start without importing the others."""
    parser = argparse.ArgumentParser(
        prog="lighthouse-attn",
        description="Lighthouse Attention: cheaper long-context pretraining that ends in an "
                    "ordinary dense model.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for invalid input, 1 for a failed write, 130 and
    143 for SIGINT and SIGTERM outside a training loop)."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    previous = signal.signal(signal.SIGTERM, _terminated)
    parser = None
    try:
        parser = build_parser(command if command in COMMANDS else None)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        command = args.command
        if getattr(args, "no_progress", False) or not sys.stderr.isatty():
            quiet_libraries()  # transformers' bars too: off when asked, and off in logs
        return importlib.import_module(COMMANDS[args.command][0]).main(args)
    except ValueError as err:
        print(f"lighthouse-attn {command}: error: {with_flags(err, parser)}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only directory: the path and the cause
        where = f"{err.filename}: " if err.filename else ""
        print(f"lighthouse-attn {command}: error: {where}{err.strerror or err}",
              file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as stop:
        name, code = ("SIGTERM", 143) if isinstance(stop, Terminated) else ("SIGINT", 130)
        print(f"{' '.join(filter(None, ('lighthouse-attn', command)))}: stopped by {name}",
              file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)


def run() -> NoReturn:
    """The ``lighthouse-attn`` console command and ``python -m lighthouse_attn``: exit with
    :func:`main`'s code through :func:`exit_process`."""
    exit_process(main())


class Terminated(BaseException):
    """SIGTERM outside a training loop (which checkpoints and stops on its own)."""


def _terminated(signum, frame) -> None:
    raise Terminated

