"""Evaluations of each arm's final dense model beyond the held-out loss curve: loss by
position and by context range on the held-out text, the long-context gain, and passkey
retrieval. Cached in ``RUN_DIR/compare_eval.json`` (recomputed only when their settings change,
or when a cache of an older version lacks the context ranges and the weights are still there),
so a report can be rebuilt from copied files."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data import TOKENIZER, open_sequences
from ..eval.passkey import MIN_CONTEXT, run_passkey
from ..eval.position_loss import loss_by_position
from ..jsonfile import write_json
from ..models.loading import load_model, model_tokenizer

CACHE = "compare_eval.json"


def passkey_contexts(seq_len: int) -> list[int]:
    """A quarter, half and all of the training length (those the prompt fits)."""
    return sorted({c for c in (seq_len // 4, seq_len // 2, seq_len) if c >= MIN_CONTEXT})


def evaluate_final(run_dir: Path, eval_data: list[str], seq_len: int, sequences: int,
                   passkey_trials: int, batch_size: int, device: torch.device,
                   progress: bool) -> dict:
    """Position buckets and passkey accuracy of ``run_dir/final`` (cached)."""
    key = {"eval_data": eval_data, "seq_len": seq_len, "sequences": sequences,
           "passkey_trials": passkey_trials}
    cache = run_dir / CACHE
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("settings") == key and ("context_ranges" in saved or
                                             not (run_dir / "final").is_dir()):
            return saved
        if not (run_dir / "final").is_dir():
            raise ValueError(f"{run_dir} keeps no weights (final/) and its cached evaluation "
                             f"used other settings ({saved.get('settings')}): use those, or "
                             "train the arm again in another output directory")
    model = load_model(run_dir / "final")[0].to(device)
    tokenizer = model_tokenizer(run_dir / "final")
    data = open_sequences(eval_data, seq_len, tokenizer, progress=False).sequences
    pos = loss_by_position(model, data, name=run_dir.name, max_sequences=sequences,
                           batch_size=batch_size, device=device, precision="auto",
                           progress=progress)
    out = {"settings": key, "position_loss": pos.loss, "position_buckets": pos.buckets,
           "context_ranges": pos.ranges, "long_context": pos.long_context}
    contexts = passkey_contexts(seq_len)
    if passkey_trials > 0 and contexts and tokenizer is TOKENIZER:  # prompts are in bytes
        result = run_passkey(model, contexts, trials=passkey_trials, batch_size=batch_size,
                             device=device, precision="auto", progress=progress)
        out.update(passkey_accuracy=result.mean_accuracy, passkey_contexts=contexts,
                   passkey_by_context=[sum(col) / len(col) for col in zip(*result.accuracy)])
    write_json(cache, out)
    return out
