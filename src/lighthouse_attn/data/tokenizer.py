"""Byte-level tokenizer (as in the paper): token ``b`` is the UTF-8 byte ``b`` (0..255) and
``SEP_ID = 256`` separates documents."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

SEP_ID = 256
"""Id of the document separator."""
VOCAB_SIZE = 257
"""256 byte values + the separator."""


class ByteTokenizer:
    """UTF-8 bytes as tokens, plus a document separator (:data:`SEP_ID`)."""

    vocab_size: int = VOCAB_SIZE
    sep_id: int = SEP_ID

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of ``text`` as ints in ``0..255`` (no separator added)."""
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        """Like :meth:`encode`, as a ``uint16`` array (fast for long documents)."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, ids: Iterable[int], sep: str = "\n") -> str:
        """Text of ``ids``; separators become ``sep``; invalid UTF-8 becomes U+FFFD.
        Raises ``ValueError`` for ids outside ``0..256``."""
        out, run = [], bytearray()
        for i in ids:
            i = int(i)
            if i == SEP_ID:
                out.append(run.decode("utf-8", errors="replace"))
                out.append(sep)
                run = bytearray()
            elif 0 <= i < 256:
                run.append(i)
            else:
                raise ValueError(f"token id {i} is outside the byte vocabulary 0..{SEP_ID}")
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)


TOKENIZER = ByteTokenizer()
encode = TOKENIZER.encode
decode = TOKENIZER.decode
vocab_size = VOCAB_SIZE
