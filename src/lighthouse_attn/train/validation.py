"""Held-out validation during training: the same sequences scored at fixed steps.

The held-out loss is always taken under dense attention (the model that will be served), and
during stage 1 also under Lighthouse (the model as it trains): the gap between the two is what
the switch to dense is about to cost. Scores are mean nats per byte over every target token of
the first ``count`` sequences of the held-out data; the model's mode and train/eval state are
restored afterwards.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..data import TOKENIZER, Tokenizer, open_sequences
from ..parallel import shard_sequence
from ..settings import SettingError
from .distributed import DistEnv


class Validation:
    """The held-out sequences of a run and how to score a model on them.

    Args:
        paths: held-out data (a prepared directory, or text: files, directories, globs,
            ``.jsonl``, parquet).
        seq_len: the run's sequence length.
        count: sequences to score (the first ``count``); a multiple of ``dp_size``.
        micro_batch: sequences per forward pass.
        dp_size: data-parallel groups sharing the sequences (each sequence is split further
            over the context-parallel processes of its group).
        text_field: field of ``.jsonl`` records and column of parquet files.
        tokenizer: the run's tokenizer.

    Raises:
        ValueError: unreadable or too little held-out data.
    """

    def __init__(self, paths: list[str], seq_len: int, count: int, micro_batch: int,
                 dp_size: int = 1, text_field: str = "text",
                 tokenizer: Tokenizer = TOKENIZER) -> None:
        if count < 1 or count % dp_size:
            near = max(1, count // dp_size) * dp_size
            raise SettingError(f"eval_sequences must be a positive multiple of the {dp_size} "
                               f"data-parallel groups (got {count}); try {near}",
                               "eval_sequences")
        try:
            source = open_sequences(paths, seq_len, tokenizer, text_field, progress=False)
        except ValueError as err:
            raise SettingError(f"eval_data: {err}", "eval_data") from None
        data = source.sequences
        if len(data) < count:
            raise SettingError(f"eval_data holds {len(data)} sequence(s) of {seq_len:,} tokens, "
                               f"fewer than eval_sequences {count}: lower eval_sequences to "
                               f"{len(data)} or add held-out text", "eval_data",
                               "eval_sequences")
        self.data, self.count, self.micro_batch = data, count, max(1, micro_batch)
        self.files = source.files
        """The held-out files (their real paths tell whether training reads them too)."""

    @torch.no_grad()
    def loss(self, model: torch.nn.Module, env: DistEnv, autocast) -> float:
        """Mean held-out loss (nats per token; per byte for the byte tokenizer) of ``model``
        in its current attention mode."""
        was_training = model.training
        model.eval()
        mine = list(range(env.dp_rank, self.count, env.dp_size))
        total = torch.zeros((), dtype=torch.float64, device=env.device)
        for i in range(0, len(mine), self.micro_batch):
            inputs, targets = self.data.batch(mine[i:i + self.micro_batch])
            if env.cp_size > 1:  # this rank's chunks of each sequence
                inputs = shard_sequence(inputs, 1, env.cp_rank, env.cp_size)
                targets = shard_sequence(targets, 1, env.cp_rank, env.cp_size)
            with autocast:
                logits = model(inputs.to(env.device))
            total += F.cross_entropy(logits.flatten(0, 1).float(),
                                     targets.to(env.device).flatten(), reduction="sum")
        model.train(was_training)
        tokens = len(mine) * self.data.seq_len // env.cp_size
        return env.mean(total / tokens).item()

    def scores(self, model: torch.nn.Module, env: DistEnv, autocast, stage: str
               ) -> dict[str, float]:
        """``{"val_dense": x}`` plus ``"val_lighthouse"`` in stage 1, and ``"val_s"``: the
        seconds the scoring took (not counted as training time)."""
        t0 = time.perf_counter()
        out = {}
        if stage == "lighthouse":
            out["val_lighthouse"] = self.loss(model, env, autocast)
            model.set_attention("dense")
            try:
                out["val_dense"] = self.loss(model, env, autocast)
            finally:
                model.set_attention("lighthouse")
        else:
            out["val_dense"] = self.loss(model, env, autocast)
        out["val_s"] = time.perf_counter() - t0
        return out


def eval_steps(every: int, lighthouse_steps: int, total_steps: int) -> set[int]:
    """Steps (1-based, after the update) at which the held-out loss is taken: every ``every``
    steps, at the end of stage 1, and at the last step."""
    steps = set(range(every, total_steps + 1, every)) | {total_steps}
    if 0 < lighthouse_steps < total_steps:
        steps.add(lighthouse_steps)
    return steps
