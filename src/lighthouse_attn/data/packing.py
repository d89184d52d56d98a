"""Join documents with separators into one token stream and cut it into fixed-length samples."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from ..settings import SettingError
from .tokenizer import TOKENIZER, Tokenizer


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits, else ``uint32``."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


BATCH_DOCS = 256
"""Documents tokenized per call (one ``encode_batch``)."""


def encode_documents(texts: list[str], tokenizer: Tokenizer, dtype: np.dtype) -> np.ndarray:
    """``text_0 SEP text_1 SEP ...`` of ``texts`` as one ``dtype`` array."""
    sep = np.array([tokenizer.sep_id], dtype=dtype)
    return np.concatenate([a for ids in tokenizer.encode_batch(texts)
                           for a in (ids.astype(dtype, copy=False), sep)])


def pack_documents(documents: Iterable[str], tokenizer: Tokenizer = TOKENIZER) -> np.ndarray:
    """``doc_0 SEP doc_1 SEP ...`` as one array (:func:`token_dtype`); empty documents are
    skipped.

    Raises ``ValueError`` if every document is empty."""
    dtype = token_dtype(tokenizer.vocab_size)
    parts: list[np.ndarray] = []
    batch: list[str] = []
    for doc in documents:
        if doc:
            batch.append(doc)
            if len(batch) == BATCH_DOCS:
                parts.append(encode_documents(batch, tokenizer, dtype))
                batch = []
    if batch:
        parts.append(encode_documents(batch, tokenizer, dtype))
    if not parts:
        raise ValueError("the data holds no text (every document is empty)")
    return np.concatenate(parts)


class TokenSamples:
    """Samples of ``seq_len + 1`` tokens of a stream that :meth:`read` returns in ranges:
    sample ``i`` is tokens ``[i*N, i*N + N + 1)`` (inputs and shifted targets)."""

    seq_len: int

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of the stream."""
        raise NotImplementedError

    def batch(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        """``(inputs, targets)``, int64 ``(len(indices), seq_len)`` each."""
        N = self.seq_len
        rows = np.stack([self.read(i * N, i * N + N + 1) for i in indices]).astype(np.int64)
        rows = torch.from_numpy(rows)
        return rows[:, :-1], rows[:, 1:]


class PackedSequences(TokenSamples):
    """Sample ``i`` is ``tokens[i*N : i*N + N + 1]`` (inputs and shifted targets), for
    ``i < (len(tokens) - 1) // N``: consecutive samples share one boundary token.

    Raises:
        ValueError: the stream is shorter than one sample (``seq_len + 1`` tokens).
    """

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1 (got {seq_len})")
        self.tokens, self.seq_len = tokens, seq_len
        self.num_samples = (len(tokens) - 1) // seq_len
        if self.num_samples < 1:
            raise SettingError(f"the data has {len(tokens):,} tokens (with separators), shorter "
                               f"than one sequence of seq_len + 1 = {seq_len + 1:,}; add data "
                               f"or use seq_len <= {max(len(tokens) - 1, 1):,}", "seq_len")
        self.fingerprint = zlib.crc32(tokens.tobytes())
        """CRC32 of the token stream: tells whether a resumed run sees the same data."""

    def __len__(self) -> int:
        return self.num_samples

    @property
    def num_tokens(self) -> int:
        """Tokens in the stream (documents and separators)."""
        return len(self.tokens)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.tokens[start:stop]
