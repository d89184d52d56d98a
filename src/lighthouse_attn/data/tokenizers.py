"""Opening a tokenizer by name: ``bytes`` or a ``tokenizer.json``, and the one a checkpoint
recorded."""

from __future__ import annotations

from pathlib import Path

from ..settings import SettingError
from .tokenizer import BYTES, TOKENIZER, TOKENIZER_FILE, Tokenizer
from .tokenizer_file import FileTokenizer


def load_tokenizer(spec: str = BYTES, sep_token: str | None = None) -> Tokenizer:
    """``"bytes"`` (the byte tokenizer), or a Hugging Face ``tokenizer.json`` file or a
    directory holding one (read with the ``tokenizers`` library; nothing is downloaded).

    ``sep_token`` names the special token that separates documents; by default the
    tokenizer's end-of-text token (see :class:`~.tokenizer_file.FileTokenizer`).

    Raises:
        ValueError: a missing or unreadable tokenizer, or no separator token.
    """
    if spec == BYTES:
        if sep_token is not None:
            raise SettingError("sep_token applies to a tokenizer file; the byte tokenizer's "
                               "separator is built in (leave sep_token unset)", "sep_token")
        return TOKENIZER
    return FileTokenizer(spec, sep_token)


def tokenizer_from_identity(identity: dict | None, model_dir: str | Path) -> Tokenizer:
    """The tokenizer a checkpoint recorded (``identity``), read from ``model_dir`` when it is a
    file tokenizer; ``ValueError`` if the stored file is missing or is not the recorded one.
    Checkpoints written before tokenizers were recorded use the byte tokenizer."""
    identity = identity or TOKENIZER.identity()
    if identity.get("type") == "byte":
        if identity != TOKENIZER.identity():
            raise ValueError(f"{model_dir} records a byte tokenizer {identity}, not this "
                             f"version's {TOKENIZER.identity()}")
        return TOKENIZER
    if identity.get("type") != "file":
        raise ValueError(f"{model_dir} records an unknown tokenizer {identity}; this version "
                         "reads byte-level models and models with a tokenizer file")
    path = Path(model_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise ValueError(f"{model_dir} was trained with a tokenizer file, but its copy "
                         f"{path} is missing")
    tok = FileTokenizer(path, identity.get("sep_token"))
    if tok.identity() != identity:
        raise ValueError(f"{path} is not the tokenizer {model_dir} records (sha256 "
                         f"{identity.get('sha256', '?')[:12]}...)")
    return tok
