"""`lighthouse-attn generate`: continue a prompt with a trained or exported model.

Dense attention with a key/value cache, greedy (``--temperature 0``) or sampled (temperature,
top-p, seed), on the CPU or a GPU; prints the continuation, then the speed. Takes a run or
checkpoint directory of this project, or an exported transformers directory (``lighthouse-attn
export``), which it runs through transformers' own ``generate``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .data import Tokenizer

HELP = "continue a prompt with a trained or exported model (dense attention, KV cache)"


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
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


def model_tokenizer_at(path: str | Path) -> Tokenizer:
    """The tokenizer of the model at ``path`` (a run, checkpoint or exported directory)."""
    from .models.hf_causal_lm import saved_tokenizer
    from .models.loading import is_hf_checkpoint, model_tokenizer, resolve_model_dir

    path = Path(path)
    if path.is_dir() and is_hf_checkpoint(path):
        return saved_tokenizer(path)
    return model_tokenizer(resolve_model_dir(path))


def run_generation(path: str | Path, prompt: list[int], max_new_tokens: int,
                   temperature: float, top_p: float, seed: int, stop: bool,
                   device: torch.device, sep_id: int) -> list[int]:
    """New token ids after ``prompt`` from the model at ``path`` (stopping after the document
    separator ``sep_id`` when ``stop``)."""
    from .models import Llama
    from .models.decode import generate
    from .models.loading import is_hf_checkpoint, load_model, resolve_model_dir

    path = Path(path)
    if path.is_dir() and is_hf_checkpoint(path):  # an export, or an --hf-config final model
        from transformers import AutoModelForCausalLM

        lm = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="sdpa")
        return _hf_generate(lm.to(device), prompt, max_new_tokens, temperature, top_p, seed,
                            stop, sep_id)
    model, _ = load_model(resolve_model_dir(path), attention="dense")
    model = model.to(device)
    if isinstance(model, Llama):
        return generate(model, prompt, max_new_tokens, temperature=temperature, top_p=top_p,
                        seed=seed, stop_ids=(sep_id,) if stop else ())
    return _hf_generate(model.lm, prompt, max_new_tokens, temperature, top_p, seed, stop,
                        sep_id)


def trained_context(path: str | Path) -> int | None:
    """The context length the model at ``path`` was trained on: its run's ``seq_len``, or an
    export's ``max_position_embeddings`` (``None`` when unknown)."""
    import json

    from .eval.loading import trained_seq_len
    from .models.loading import is_hf_checkpoint, resolve_model_dir

    path = Path(path)
    if path.is_dir() and is_hf_checkpoint(path):
        value = json.loads((path / "config.json").read_text()).get("max_position_embeddings")
        return value if isinstance(value, int) else None
    try:
        return trained_seq_len(resolve_model_dir(path))
    except ValueError:
        return None


def _hf_generate(lm, prompt: list[int], max_new_tokens: int, temperature: float,
                 top_p: float, seed: int, stop: bool, sep_id: int) -> list[int]:
    torch.manual_seed(seed)
    ids = torch.tensor([prompt], device=next(lm.parameters()).device)
    kwargs = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) \
        if temperature > 0 else dict(do_sample=False)
    out = lm.eval().generate(ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=max_new_tokens,
                             eos_token_id=sep_id if stop else None, pad_token_id=sep_id,
                             use_cache=True, **kwargs)
    return out[0, len(prompt):].tolist()


def main(args: argparse.Namespace) -> int:
    from .runtime import resolve_device

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
    new = run_generation(args.checkpoint, prompt, args.max_new_tokens, args.temperature,
                         args.top_p, args.seed, not args.no_stop, device, tokenizer.sep_id)
    dt = time.perf_counter() - t0
    print(text + tokenizer.decode(new, sep="\n"))
    print(f"{len(new)} tokens in {dt:.2f} s ({len(new) / dt:.1f} tokens/s, {device.type}, "
          f"prompt {len(prompt)} tokens)", file=sys.stderr)
    return 0
