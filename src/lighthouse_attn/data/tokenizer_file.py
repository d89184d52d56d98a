"""A Hugging Face ``tokenizer.json`` as a training tokenizer (the ``tokenizers`` library; no
``transformers`` needed, nothing downloaded).

The document separator is ``sep_token`` when given, else the end-of-text token named by a
``tokenizer_config.json`` beside the file, else the first special token of the file with a
usual end-of-text name (:data:`EOS_NAMES`). The identity that checkpoints and prepared shards
record is the SHA-256 of the file's bytes with the vocabulary size and the separator.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..settings import SettingError
from .tokenizer import TOKENIZER_FILE

EOS_NAMES = ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>", "<|eot_id|>", "<|im_end|>",
             "[SEP]")
"""End-of-text tokens looked for (in this order) when nothing names the separator."""


class FileTokenizer:
    """The tokenizer of a ``tokenizer.json`` (``path`` is the file or a directory holding it).

    Raises:
        ValueError: no such file, a file ``tokenizers`` cannot load, or no separator token.
    """

    def __init__(self, path: str | Path, sep_token: str | None = None) -> None:
        path = Path(path)
        config = None
        if path.is_dir():
            config = path / "tokenizer_config.json"
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise ValueError(f"tokenizer {path} does not exist; pass a Hugging Face "
                             "tokenizer.json, a directory holding one, or bytes")
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ValueError("a tokenizer file needs the tokenizers package: pip install "
                             "'lighthouse-attn[data]'") from None
        self.source = path.read_bytes()
        try:
            self._tok = Tokenizer.from_str(self.source.decode("utf-8"))
        except Exception as err:  # the Rust loader raises plain Exceptions
            raise ValueError(f"cannot load tokenizer {path}: {str(err).splitlines()[0]}; pass "
                             "a Hugging Face tokenizer.json (or bytes)") from None
        self.path = path
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.sep_token = sep_token or _configured_eos(config) or self._known_eos()
        if self.sep_token is None:
            raise SettingError(f"tokenizer {path} names no end-of-text token; name the "
                               f"document separator with sep_token (special tokens: "
                               f"{self._special_tokens()[:8]})", "sep_token")
        sep_id = self._tok.token_to_id(self.sep_token)
        if sep_id is None:
            raise ValueError(f"separator token {self.sep_token!r} is not in tokenizer {path}; "
                             f"choose one of its special tokens {self._special_tokens()[:8]}")
        self.sep_id = sep_id
        self.sha256 = hashlib.sha256(self.source).hexdigest()

    def _special_tokens(self) -> list[str]:
        return [t.content for _, t in sorted(self._tok.get_added_tokens_decoder().items())
                if t.special]

    def _known_eos(self) -> str | None:
        special = set(self._special_tokens())
        return next((name for name in EOS_NAMES if name in special), None)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_array(self, text: str) -> np.ndarray:
        """Like :meth:`encode`, as a ``uint32`` array."""
        return np.asarray(self.encode(text), dtype=np.uint32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """:meth:`encode_array` of each text, in one call (parallel inside ``tokenizers``)."""
        return [np.asarray(e.ids, dtype=np.uint32)
                for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], sep: str = "\n") -> str:
        """Text of ``ids``; separators become ``sep``. Raises ``ValueError`` for ids outside
        the vocabulary."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary "
                             f"0..{self.vocab_size - 1}")
        parts, run = [], []
        for i in ids + [self.sep_id]:
            if i == self.sep_id:
                parts.append(self._tok.decode(run, skip_special_tokens=False))
                run = []
            else:
                run.append(i)
        return sep.join(parts)

    def identity(self) -> dict:
        """What checkpoints and prepared shards record: type, SHA-256 of the file, vocabulary
        size and separator."""
        return {"type": "file", "sha256": self.sha256, "vocab_size": self.vocab_size,
                "sep_id": self.sep_id, "sep_token": self.sep_token}

    def files(self) -> dict[str, bytes]:
        """The file stored beside a model (its bytes, unchanged)."""
        return {TOKENIZER_FILE: self.source}


def _configured_eos(config: Path | None) -> str | None:
    """The ``eos_token`` of a ``tokenizer_config.json`` (a string or ``{"content": ...}``)."""
    if config is None or not config.is_file():
        return None
    try:
        eos = json.loads(config.read_text()).get("eos_token")
    except (ValueError, AttributeError, OSError):
        return None
    if isinstance(eos, dict):
        eos = eos.get("content")
    return eos if isinstance(eos, str) else None
