"""Deterministic, resumable batches: seeded shuffles per epoch, sharded over ranks."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..settings import SettingError
from .packing import PackedSequences


class BatchLoader:
    """Global batches of ``global_batch`` samples from an endless stream of seeded epochs.

    Position ``j`` of the stream is sample ``perm_e[j % n]`` with ``e = j // n`` and
    ``perm_e`` a permutation seeded by ``(seed, e)``. A global batch is cut into
    ``grad_accum`` micro-steps, each split evenly over ``world_size`` ranks; this rank gets
    ``micro_batch = global_batch / (grad_accum * world_size)`` samples per micro-step. The
    state is the number of samples consumed, so resuming continues exactly.

    Raises:
        ValueError: ``global_batch`` not a multiple of ``grad_accum * world_size``.
    """

    def __init__(self, data: PackedSequences, global_batch: int, grad_accum: int = 1,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        split = grad_accum * world_size
        if global_batch < 1 or grad_accum < 1 or global_batch % split:
            raise SettingError(f"batch_size {global_batch} must be a positive multiple of "
                               f"grad_accum ({grad_accum}) x processes ({world_size}) = {split};"
                               f" try batch_size {max(split, global_batch // split * split)}",
                               "batch_size", "grad_accum")
        self.data, self.global_batch, self.grad_accum = data, global_batch, grad_accum
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.micro_batch = global_batch // split
        self.consumed = 0
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _sample(self, position: int) -> int:
        n = len(self.data)
        epoch = position // n
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            self._perm_epoch = epoch
        return int(self._perm[position % n])

    @property
    def epoch(self) -> float:
        """Passes over the data so far (fractional)."""
        return self.consumed / len(self.data)

    def next_step(self) -> list[tuple[Tensor, Tensor]]:
        """This rank's ``grad_accum`` micro-batches ``(inputs, targets)``, each int64
        ``(micro_batch, seq_len)``, of the next global batch."""
        start, mb = self.consumed, self.micro_batch
        positions = range(start, start + self.global_batch)
        samples = [self._sample(j) for j in positions]
        self.consumed += self.global_batch
        out = []
        for step in range(self.grad_accum):
            base = (step * self.world_size + self.rank) * mb
            out.append(self.data.batch(samples[base:base + mb]))
        return out

    def state_dict(self) -> dict:
        return {"consumed": self.consumed, "seed": self.seed,
                "num_samples": len(self.data), "seq_len": self.data.seq_len,
                "fingerprint": self.data.fingerprint}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``; ``ValueError`` if it was saved for other data."""
        mine = self.state_dict()
        for key in ("seq_len", "num_samples", "fingerprint", "seed"):
            if state.get(key) != mine[key]:
                raise SettingError(f"the checkpoint's data position does not fit this data: "
                                   f"{key} was {state.get(key)!r}, now {mine[key]!r} (resume "
                                   "with the same data paths, seq_len and seed)", "seq_len",
                                   "seed")
        self.consumed = int(state["consumed"])
