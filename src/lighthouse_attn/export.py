"""`lighthouse-attn export`: a trained model as an ordinary transformers checkpoint.

The final dense model of a run (or any of its checkpoints) becomes a ``LlamaForCausalLM``
directory (``config.json``, ``model.safetensors``, ``generation_config.json``) with the byte
tokenizer beside it (``tokenizer.json``, ``tokenizer_config.json``), so that
``AutoModelForCausalLM.from_pretrained(OUT)`` and ``AutoTokenizer.from_pretrained(OUT)`` load
it with no code of ours, and any transformers-based server can serve it. Runs of an HF
architecture (``--hf-config``) are exported in their own architecture. The directory is
written atomically (``hf.model.save_pretrained``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "the trained model as a transformers checkpoint with its byte tokenizer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR",
                        help="run directory (its final dense model, else its newest "
                             "checkpoint) or checkpoint directory")
    parser.add_argument("out", metavar="OUT_DIR", help="directory to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT_DIR if it already holds files")


def check_output_dir(out: Path, overwrite: bool) -> None:
    """``ValueError`` unless ``out`` can be written: not an existing file, empty or
    ``overwrite``, and a writable parent."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; choose a directory for the export")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} already holds files; pass --overwrite to replace it, or "
                         "choose another directory")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write {out}: {parent} is not writable; choose another "
                         "directory")


def export(run: str | Path, out: str | Path, overwrite: bool = False) -> dict:
    """Write the model at ``run`` to ``out``; returns what was exported (``step``,
    ``trained_attention``, ``architecture``, ``parameters``, ``warnings``).

    Raises:
        ValueError: no model at ``run``, an unwritable ``out``, or a model that does not map
            exactly onto the transformers architecture.
    """
    from .data.hf_tokenizer import hf_byte_tokenizer
    from .eval.loading import trained_seq_len
    from .hf.model import save_pretrained
    from .models import Llama
    from .models.to_hf import to_hf_llama
    from .train.checkpoint import load_model, resolve_model_dir

    out = Path(out)
    check_output_dir(out, overwrite)
    model_dir = resolve_model_dir(run)
    model, info = load_model(model_dir, attention="dense")
    warnings = []
    if info["trained_attention"] == "lighthouse":
        warnings.append(f"{model_dir} was saved during stage 1 (trained with Lighthouse "
                        "attention, before any dense recovery): it is exported as a dense model, "
                        "which it has not been trained to be; expect a higher loss than after "
                        "recovery")
    if isinstance(model, Llama):
        hf = to_hf_llama(model, max(trained_seq_len(model_dir) or 0, 2048))
    else:
        hf = model.lm  # an --hf-config run: already a transformers model
        hf.config._attn_implementation = "sdpa"
    try:
        save_pretrained(hf, out, tokenizer=hf_byte_tokenizer())  # atomic, replaces ``out``
    except OSError as err:
        raise ValueError(f"cannot write {out}: {err.strerror}; choose another directory"
                         ) from None
    return {"step": info["step"], "trained_attention": info["trained_attention"],
            "architecture": type(hf).__name__, "source": str(model_dir),
            "parameters": sum(p.numel() for p in hf.parameters()), "warnings": warnings}


def main(args: argparse.Namespace) -> int:
    result = export(args.run, args.out, args.overwrite)
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"exported {result['source']} (step {result['step']}) to {args.out}: "
          f"{result['architecture']}, {result['parameters'] / 1e6:.2f}M parameters, with the "
          "byte tokenizer")
    print(f"load it with AutoModelForCausalLM.from_pretrained({str(args.out)!r}) and "
          f"AutoTokenizer.from_pretrained({str(args.out)!r})")
    return 0
