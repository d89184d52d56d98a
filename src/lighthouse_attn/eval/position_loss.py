"""Held-out loss by token position: does the loss keep falling as the context grows?

The data is packed as for training (documents joined by the separator, cut into ``seq_len``
sequences) and the first ``max_sequences`` sequences are scored. Position ``t`` (1-based) is
the prediction of token ``t + 1`` from the ``t`` tokens before it; positions are grouped in
powers of two, ``[1, 2), [2, 4), ..., [2^k, seq_len]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import PackedSequences
from ..progress import bar_disable
from .forward import autocast


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


@dataclass
class PositionLoss:
    """Mean loss (nats per token) per position (``per_position``: ``seq_len`` floats, index
    ``t - 1`` for position ``t``), overall, and per bucket (``buckets``: dicts with
    ``start``, ``end`` (exclusive) and ``loss``), over ``sequences`` sequences."""

    name: str
    seq_len: int
    sequences: int
    loss: float
    per_position: list[float]
    buckets: list[dict]

    def to_dict(self, per_position: bool = False) -> dict:
        d = {"name": self.name, "seq_len": self.seq_len, "sequences": self.sequences,
             "tokens": self.sequences * self.seq_len, "loss": self.loss,
             "buckets": self.buckets}
        if per_position:
            d["per_position"] = self.per_position
        return d


@torch.no_grad()
def loss_by_position(model, data: PackedSequences, *, name: str = "model",
                     max_sequences: int | None = None, batch_size: int = 4,
                     device: torch.device | str = "cpu", precision: str = "fp32",
                     progress: bool = True) -> PositionLoss:
    """Cross-entropy of ``model`` (``ids (B, N) -> logits (B, N, V)``) on the first
    ``max_sequences`` sequences of ``data`` (all when ``None``), by position.

    Raises:
        ValueError: ``max_sequences`` or ``batch_size`` below 1.
    """
    if batch_size < 1 or (max_sequences is not None and max_sequences < 1):
        raise ValueError("batch_size and max_sequences must be >= 1")
    device = torch.device(device)
    n = len(data) if max_sequences is None else min(max_sequences, len(data))
    N = data.seq_len
    total = torch.zeros(N, dtype=torch.float64)
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
        bar.update(len(inputs))
    bar.close()
    per_position = total / n
    buckets = [{"start": a, "end": b, "loss": per_position[a - 1:b - 1].mean().item()}
               for a, b in position_buckets(N)]
    return PositionLoss(name, N, n, per_position.mean().item(), per_position.tolist(),
                        buckets)
