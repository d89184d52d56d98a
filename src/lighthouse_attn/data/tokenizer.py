"""The tokenizer interface and the byte-level tokenizer (as in the paper; token ``b`` is the
UTF-8 byte ``b``, and ``SEP_ID = 256`` separates documents). :func:`~.tokenizers.load_tokenizer`
opens either it or a Hugging Face ``tokenizer.json``
(:class:`~.tokenizer_file.FileTokenizer`).

Every tokenizer has ``vocab_size``, ``sep_id`` (the document separator), ``encode``,
``encode_array`` (a ``uint32``-safe array), ``decode``, ``identity()`` (a JSON-ready dict that
checkpoints and prepared shards record, so that a mismatch is caught) and ``files()`` (the
files stored beside a model so that it can be read back).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np

SEP_ID = 256
"""Id of the document separator."""
VOCAB_SIZE = 257
"""256 byte values + the separator."""


class Tokenizer(Protocol):
    """What training, evaluation and export need of a tokenizer."""

    vocab_size: int
    sep_id: int

    def encode(self, text: str) -> list[int]: ...
    def encode_array(self, text: str) -> np.ndarray: ...
    def encode_batch(self, texts: list[str]) -> list[np.ndarray]: ...
    def decode(self, ids: Iterable[int], sep: str = "\n") -> str: ...
    def identity(self) -> dict: ...
    def files(self) -> dict[str, bytes]: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens, plus a document separator (:data:`SEP_ID`)."""

    vocab_size: int = VOCAB_SIZE
    sep_id: int = SEP_ID
    name: str = "bytes"

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of ``text`` as ints in ``0..255`` (no separator added)."""
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        """Like :meth:`encode`, as a ``uint16`` array (fast for long documents)."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """:meth:`encode_array` of each text."""
        return [self.encode_array(t) for t in texts]

    def identity(self) -> dict:
        """What checkpoints and prepared shards record about the tokenizer."""
        return {"type": "byte", "vocab_size": VOCAB_SIZE, "sep_id": SEP_ID}

    def files(self) -> dict[str, bytes]:
        """Files stored beside a model: none (the byte tokenizer is built in)."""
        return {}
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
BYTES = "bytes"
"""The ``tokenizer`` setting of the byte tokenizer (the default)."""
TOKENIZER_FILE = "tokenizer.json"
"""Name of a tokenizer file stored beside a model."""


def loss_unit(tokenizer: str) -> str:
    """The unit of a run's losses from its ``tokenizer`` setting: ``nats/byte`` for
    :data:`BYTES`, else ``nats/token``."""
    return "nats/byte" if tokenizer == BYTES else "nats/token"


def check_same_tokenizer(recorded: dict, tokenizer: Tokenizer, what: str, fix: str) -> None:
    """``ValueError`` naming ``what`` and ``fix`` when ``recorded`` (an :meth:`identity`) is
    not ``tokenizer``'s."""
    mine = tokenizer.identity()
    if recorded != mine:
        raise ValueError(f"{what} uses tokenizer {describe_identity(recorded)}, not "
                         f"{describe_identity(mine)}; {fix}")


def describe_identity(identity: dict) -> str:
    """``bytes`` or ``tokenizer.json (vocab 50,257, sha256 1a2b3c4d5e6f)``."""
    if identity.get("type") == "byte":
        return "bytes"
    return (f"file (vocab {identity.get('vocab_size', 0):,}, separator "
            f"{identity.get('sep_token')!r}, sha256 {str(identity.get('sha256', '?'))[:12]})")
encode = TOKENIZER.encode
decode = TOKENIZER.decode
vocab_size = VOCAB_SIZE
