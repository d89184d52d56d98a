"""Corpus readers: files, directories (recursive), globs, ``.jsonl`` and plain text.

Every plain-text file is one document; every line of a ``.jsonl`` file is one document (its
``text_field``). Hidden files and directories are skipped, and so are binary files (a NUL byte
in the first 8 KiB) found while walking a directory.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator

import numpy as np

from .packing import pack_documents
from .stdlib import stdlib_documents

_GLOB_CHARS = "*?["


def resolve_paths(paths: list[str]) -> list[str]:
    """Expand globs and directories into a sorted, de-duplicated list of files.

    Raises:
        ValueError: no paths, a path that does not exist, a glob or directory with no files.
    """
    if not paths:
        raise ValueError("no data paths given; pass --data FILE|DIR|GLOB (or omit --data for "
                         "the embedded stdlib corpus)")
    files: list[str] = []
    for path in paths:
        if any(c in path for c in _GLOB_CHARS):
            matches = sorted(glob.glob(path, recursive=True))
            if not matches:
                raise ValueError(f"data glob {path!r} matches nothing")
            for m in matches:
                files.extend(_walk(m) if os.path.isdir(m) else [m])
        elif os.path.isdir(path):
            found = _walk(path)
            if not found:
                raise ValueError(f"data directory {path!r} holds no readable text files")
            files.extend(found)
        elif os.path.isfile(path):
            if _is_binary(path):
                raise ValueError(f"data file {path!r} is binary (a NUL byte in its first 8 KiB), "
                                 "not text; pass text files, or a directory (binary files in "
                                 "directories are skipped)")
            files.append(path)
        elif os.path.exists(path):
            raise ValueError(f"data path {path!r} is not a regular file or directory (a device, "
                             "pipe or socket); pass files, directories or globs of text")
        else:
            raise ValueError(f"data path {path!r} does not exist (pass files, directories or "
                             "globs such as 'data/**/*.txt')")
    unique: dict[str, str] = {}
    for f in files:
        unique.setdefault(os.path.abspath(f), f)
    return list(unique.values())


def _walk(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if not name.startswith(".") and not _is_binary(path):
                out.append(path)
    return out


def _is_binary(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return b"\0" in f.read(8192)
    except OSError:
        return True


def read_documents(paths: list[str], text_field: str = "text") -> Iterator[str]:
    """Documents of ``paths`` (see :func:`resolve_paths`), in file order.

    Raises:
        ValueError: unreadable files, invalid JSON lines, or a ``.jsonl`` record without a
            string ``text_field``.
    """
    for path in resolve_paths(paths):
        try:
            if path.endswith(".jsonl"):
                yield from _read_jsonl(path, text_field)
            else:
                with open(path, encoding="utf-8", errors="replace") as f:
                    yield f.read()
        except OSError as err:
            raise ValueError(f"cannot read data file {path!r}: {err.strerror}") from None


def _read_jsonl(path: str, text_field: str) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                keys = sorted(record) if isinstance(record, dict) else []
                raise ValueError(f"{path}:{lineno}: no string field {text_field!r} (keys: "
                                 f"{keys}); choose the field with --text-field")
            yield record[text_field]


def load_tokens(paths: list[str] | None = None, text_field: str = "text") -> np.ndarray:
    """The packed ``uint16`` token stream of ``paths``, or of the embedded stdlib corpus when
    ``paths`` is empty or ``None``. Raises ``ValueError`` for missing or empty data."""
    docs = read_documents(paths, text_field) if paths else stdlib_documents()
    return pack_documents(docs)
