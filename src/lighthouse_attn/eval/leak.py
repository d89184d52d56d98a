"""Does a model read the future? Replace the text after a cut and watch the positions before it.

For a causal model the outputs at positions before the cut cannot change when only tokens at
or after the cut do: every difference measured here is information flowing backwards. Under
the paper's Lighthouse selection it can flow (which windows get refined depends on later
tokens); under dense attention or the causal selection it must be exactly zero.

Per sequence and cut ``c`` (drawn at random, seeded): the original sequence and a copy whose
tokens ``c..N-1`` come from another sequence are run through the model. The positions
``t < c - 1`` have the same inputs and the same targets in both; the report gives the mean
change of their loss (positive: the model predicts the prefix worse once the real future is
gone, i.e. it relied on it), the largest change of a logit, and the share of those positions
whose logits changed at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import PackedSequences
from ..progress import bar_disable
from ..runtime import autocast


@dataclass
class LeakResult:
    """Averages over every (sequence, cut) pair; ``cuts`` holds one dict per pair."""

    sequences: int
    cuts_per_sequence: int
    mean_loss_change: float
    max_logit_change: float
    changed_fraction: float
    cuts: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def _token_losses(model, ids: torch.Tensor, device: torch.device, precision: str
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad(), autocast(device, precision):
        logits = model(ids[:, :-1].to(device))
    logits = logits.float()
    loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].to(device).flatten(),
                           reduction="none").view(ids.shape[0], -1)
    return logits, loss


def measure_leak(model, data: PackedSequences, *, sequences: int = 4, cuts: int = 4,
                 seed: int = 0, device: torch.device | str = "cpu", precision: str = "fp32",
                 progress: bool = True) -> LeakResult:
    """Run the cut-and-replace test on the first ``sequences`` sequences of ``data``.

    ``model(ids (B, N) int64) -> logits (B, N, V)``. Cuts are drawn uniformly from
    ``[2, N - 1]``; the replacement text is the sequence ``sequences`` places further on
    (wrapping around). Raises ``ValueError`` for counts below 1 or sequences shorter than 4.
    """
    if sequences < 1 or cuts < 1:
        raise ValueError(f"sequences and cuts must be >= 1 (got {sequences}, {cuts})")
    N = data.seq_len
    if N < 4:
        raise ValueError(f"the sequences are too short to cut (seq_len {N}); use >= 4")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    n = min(sequences, len(data))
    rows = []
    bar = tqdm(total=n * cuts, unit="cut", desc="leak", dynamic_ncols=True,
               disable=bar_disable(progress))
    for i in range(n):
        x, y = data.batch([i])
        original = torch.cat([x, y[:, -1:]], dim=1)  # N + 1 tokens: inputs and targets
        ox, oy = data.batch([(i + n) % len(data) if len(data) > 1 else i])
        other = torch.cat([ox, oy[:, -1:]], dim=1)
        if len(data) == 1:
            other = other.roll(N // 2, dims=1)
        base_logits, base_loss = _token_losses(model, original, device, precision)
        for _ in range(cuts):
            c = int(torch.randint(2, N, (1,), generator=gen))
            changed = original.clone()
            changed[:, c:] = other[:, c:]
            logits, loss = _token_losses(model, changed, device, precision)
            keep = c - 1  # positions 0 .. c-2: same inputs and same targets
            delta = (logits[:, :keep] - base_logits[:, :keep]).abs()
            rows.append({"sequence": i, "cut": c,
                         "loss_change": (loss[:, :keep] - base_loss[:, :keep]).mean().item(),
                         "max_logit_change": delta.max().item(),
                         "changed_fraction": (delta.amax(-1) > 0).float().mean().item()})
            bar.update()
    bar.close()
    mean = lambda key: sum(r[key] for r in rows) / len(rows)
    return LeakResult(n, cuts, mean("loss_change"), max(r["max_logit_change"] for r in rows),
                      mean("changed_fraction"), rows)
