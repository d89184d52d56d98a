"""Held-out loss by token position: does the loss keep falling as the context grows?

The data is packed as for training (documents joined by the separator, cut into ``seq_len``
sequences) and the first ``max_sequences`` sequences are scored. Position ``t`` (1-based) is
the prediction of token ``t + 1`` from the ``t`` tokens before it; positions are grouped in
powers of two, ``[1, 2), [2, 4), ..., [2^k, seq_len]``, and in the coarse context ranges that
tell whether a long-context model uses its length: 0-2K, 2K-8K, 8K-32K, 32K-128K, ... up to
``seq_len`` (K = 1024 tokens).

The long-context gain compares the last ``window`` positions of each sequence scored twice:
with the full context, and with only the ``window`` tokens before them (the model reads the
last ``2 * window`` tokens alone, so a scored position sees between ``window`` and
``2 * window - 1`` tokens). Short-context loss minus full-context loss: positive when the
model uses text more than ``window`` tokens back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import PackedSequences
from ..progress import bar_disable
from ..runtime import autocast


def position_buckets(seq_len: int) -> list[tuple[int, int]]:
    """Half-open 1-based position ranges ``[2^i, 2^(i+1))``; the last one ends at
    ``seq_len + 1`` (so it holds ``seq_len``)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1 (got {seq_len})")
    edges, e = [], 1
    while e <= seq_len:
        edges.append(e)
        e *= 2
    edges.append(seq_len + 1)
    if len(edges) > 2 and edges[-1] - edges[-2] < 2:
        edges.pop(-2)  # do not end with a one-position bucket
    return list(zip(edges[:-1], edges[1:]))


CONTEXT_EDGES = (2048, 8192, 32768)
"""Where the coarse context ranges end below 32K; beyond it they grow by 4x (128K, 512K...)."""

GAIN_WINDOW = 2048
"""Positions scored (and context kept) by the long-context gain."""


def _short(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 and n >= 1024 else f"{n:,}"


def context_ranges(seq_len: int) -> list[tuple[str, int, int]]:
    """``(label, start, end)``: 1-based half-open position ranges 0-2K, 2K-8K, 8K-32K,
    32K-128K, ... (each edge below ``seq_len``), the last one ending at ``seq_len + 1``."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1 (got {seq_len})")
    edges = [e for e in CONTEXT_EDGES if e < seq_len]
    e = CONTEXT_EDGES[-1] * 4
    while e < seq_len:
        edges.append(e)
        e *= 4
    bounds = [0, *edges, seq_len]
    labels = [_short(b) for b in bounds[:-1]] + ["end"]
    return [(f"{labels[i]}-{labels[i + 1]}", bounds[i] + 1, bounds[i + 1] + 1)
            for i in range(len(bounds) - 1)]


@dataclass
class PositionLoss:
    """Mean loss (nats per token) per position (``per_position``: ``seq_len`` floats, index
    ``t - 1`` for position ``t``), overall, and per bucket (``buckets``: dicts with
    ``start``, ``end`` (exclusive) and ``loss``), per context range (``ranges``: the same
    with a ``label`` such as ``"2K-8K"``), over ``sequences`` sequences; ``long_context``: the
    long-context gain (``window``, ``loss_full``, ``loss_short``, ``gain``), ``None`` when the
    sequences are shorter than two windows."""

    name: str
    seq_len: int
    sequences: int
    loss: float
    per_position: list[float]
    buckets: list[dict]
    ranges: list[dict] = field(default_factory=list)
    long_context: dict | None = None

    def to_dict(self, per_position: bool = False) -> dict:
        d = {"name": self.name, "seq_len": self.seq_len, "sequences": self.sequences,
             "tokens": self.sequences * self.seq_len, "loss": self.loss,
             "buckets": self.buckets, "ranges": self.ranges,
             "long_context": self.long_context}
        if per_position:
            d["per_position"] = self.per_position
        return d


@torch.no_grad()
def loss_by_position(model, data: PackedSequences, *, name: str = "model",
                     max_sequences: int | None = None, batch_size: int = 4,
                     device: torch.device | str = "cpu", precision: str = "fp32",
                     gain_window: int | None = GAIN_WINDOW, progress: bool = True
                     ) -> PositionLoss:
    """Cross-entropy of ``model`` (``ids (B, N) -> logits (B, N, V)``) on the first
    ``max_sequences`` sequences of ``data`` (all when ``None``), by position, and the
    long-context gain over the last ``gain_window`` positions (``None``: not measured; also
    skipped when ``seq_len < 2 * gain_window``).

    Raises:
        ValueError: ``max_sequences``, ``batch_size`` or ``gain_window`` below 1.
    """
    if batch_size < 1 or (max_sequences is not None and max_sequences < 1):
        raise ValueError("batch_size and max_sequences must be >= 1")
    if gain_window is not None and gain_window < 1:
        raise ValueError(f"gain_window must be >= 1 or None (got {gain_window})")
    device = torch.device(device)
    n = len(data) if max_sequences is None else min(max_sequences, len(data))
    N = data.seq_len
    total = torch.zeros(N, dtype=torch.float64)
    W = gain_window if gain_window is not None and N >= 2 * gain_window else None
    short_total = 0.0
    bar = tqdm(total=n, unit="seq", desc=f"loss {name}", dynamic_ncols=True,
               disable=bar_disable(progress))
    for start in range(0, n, batch_size):
        inputs, targets = data.batch(list(range(start, min(n, start + batch_size))))
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast(device, precision):
            logits = model(inputs)
        nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                              reduction="none").view(targets.shape)
        total += nll.double().sum(0).cpu()
        if W is not None:  # the last W positions with only the W tokens before them
            with autocast(device, precision):
                logits = model(inputs[:, -2 * W:])[:, -W:]
            short_total += F.cross_entropy(logits.float().flatten(0, 1),
                                           targets[:, -W:].flatten(), reduction="sum").item()
        bar.update(len(inputs))
    bar.close()
    per_position = total / n
    buckets = [{"start": a, "end": b, "loss": per_position[a - 1:b - 1].mean().item()}
               for a, b in position_buckets(N)]
    ranges = [{"label": label, "start": a, "end": b,
               "loss": per_position[a - 1:b - 1].mean().item()}
              for label, a, b in context_ranges(N)]
    long_context = None
    if W is not None:
        full, short = per_position[-W:].mean().item(), short_total / (n * W)
        long_context = {"window": W, "loss_full": full, "loss_short": short,
                        "gain": short - full}
    return PositionLoss(name, N, n, per_position.mean().item(), per_position.tolist(),
                        buckets, ranges, long_context)
