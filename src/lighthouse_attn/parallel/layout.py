"""The load-balanced sequence layout of context parallelism (docs/spec.md section 12).

With ``W`` ranks the sequence is cut into ``2W`` equal chunks; rank ``r`` holds chunks ``r``
and ``2W-1-r``, concatenated in that order (causal attention costs grow along the sequence,
so every rank gets one cheap and one expensive chunk).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor


def chunk_ids(rank: int, world: int) -> tuple[int, int]:
    """The two chunks rank ``rank`` holds, in its local order."""
    return rank, 2 * world - 1 - rank


def owner(chunk: int, world: int) -> tuple[int, int]:
    """``(rank, slot)`` holding ``chunk``: slot 0 is the rank's first local chunk."""
    return (chunk, 0) if chunk < world else (2 * world - 1 - chunk, 1)


def _gathered_row(chunk: int, b: int, batch: int, world: int, kinds: int = 1,
                  kind: int = 0) -> int:
    """Where batch row ``b`` of ``chunk`` sits among every rank's rows gathered in rank order,
    each rank's laid out ``(kind, b, slot)`` with ``kinds`` blocks of ``2 batch`` rows."""
    r, j = owner(chunk, world)
    return ((r * kinds + kind) * batch + b) * 2 + j


@functools.lru_cache(maxsize=64)
def neighbours(rank: int, world: int, step: int, batch: int, device: torch.device) -> Tensor:
    """For each of this rank's batch rows ``(b, slot)`` holding chunk ``c``, where chunk ``c +
    step``'s row ``b`` sits among every rank's ``2 batch`` rows gathered in rank order, or
    ``2 batch world`` (one row past them) where ``c + step`` is outside the sequence (cached:
    no launches after the first call)."""
    fill = 2 * batch * world
    rows = [_gathered_row(c + step, b, batch, world) if 0 <= c + step < 2 * world else fill
            for b in range(batch) for c in chunk_ids(rank, world)]
    return torch.tensor(rows, device=device)


def chunk_of(pieces: Tensor, chunk: int, world: int) -> Tensor:
    """Chunk ``chunk`` ``(2, B, ..., n, D)`` (a view) of ``pieces`` ``(W, 2, 2B, ..., n,
    D)``: every rank's keys and values of its two chunks as batch rows ``(b, slot)``, in rank
    order (an all-gather of :func:`as_batch` tensors)."""
    r, j = owner(chunk, world)
    return pieces[r][:, j::2]


def chunks_upto(pieces: Tensor, last: int, world: int) -> Tensor:
    """Chunks ``0 .. last`` of ``pieces`` (:func:`chunk_of`) in sequence order along dim
    -2: ``(2, B, ..., (last + 1) n, D)`` (a view when ``last`` is 0)."""
    if last == 0:
        return chunk_of(pieces, 0, world)
    return torch.cat([chunk_of(pieces, c, world) for c in range(last + 1)], -2)


@functools.lru_cache(maxsize=64)
def read_rows(chunks: int, batch: int, kind: int, world: int, device: torch.device) -> Tensor:
    """Where the rows ``(c, b)`` (chunk-major) of chunks ``0 .. chunks-1`` of the keys
    (``kind`` 0) or values (1) sit among the rows ``(rank, kind, b, slot)`` of every rank's
    pieces ``(W, 2, 2B, ...)`` (cached: no launches after the first call)."""
    rows = [_gathered_row(c, b, batch, world, kinds=2, kind=kind)
            for c in range(chunks) for b in range(batch)]
    return torch.tensor(rows, device=device)


def as_batch(x: Tensor) -> Tensor:
    """``(B, H, 2n, ...)`` -> ``(2B, H, n, ...)``: a rank's two chunks as batch rows ``(b,
    slot)``, so that they share every kernel launch; a view where the strides allow (batch 1,
    or a ``(B, N, H, D)`` tensor seen as ``(B, H, N, D)``), else a copy."""
    return x.unflatten(2, (2, x.shape[2] // 2)).transpose(1, 2).flatten(0, 1)


def from_batch(x: Tensor) -> Tensor:
    """The inverse of :func:`as_batch`: ``(2B, H, n, ...)`` -> ``(B, H, 2n, ...)``; a view
    where the strides allow (e.g. ``x`` laid out as an :func:`as_batch` view), else a copy."""
    return x.unflatten(0, (-1, 2)).transpose(1, 2).flatten(2, 3)


def shard_sequence(x: Tensor, dim: int, rank: int, world: int) -> Tensor:
    """This rank's part of ``x`` (the full sequence along ``dim``, a multiple of ``2W``)."""
    chunks = x.chunk(2 * world, dim=dim)
    a, b = chunk_ids(rank, world)
    return torch.cat([chunks[a], chunks[b]], dim=dim)


def unshard_sequence(parts: list[Tensor], dim: int) -> Tensor:
    """The full sequence from every rank's part (``parts[r]`` from rank ``r``)."""
    world = len(parts)
    chunks: list[Tensor | None] = [None] * (2 * world)
    for rank, part in enumerate(parts):
        first, second = part.chunk(2, dim=dim)
        a, b = chunk_ids(rank, world)
        chunks[a], chunks[b] = first, second
    return torch.cat(chunks, dim=dim)


def local_positions(local_len: int, rank: int, world: int, device=None) -> Tensor:
    """Global positions (int64) of this rank's ``local_len`` tokens."""
    n = local_len // 2
    a, b = chunk_ids(rank, world)
    return torch.cat([torch.arange(a * n, (a + 1) * n, device=device),
                      torch.arange(b * n, (b + 1) * n, device=device)])
