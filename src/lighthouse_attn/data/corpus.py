"""Corpus readers: files, directories (recursive), globs, plain text, ``.jsonl`` (also
``.gz``/``.zst``) and ``.parquet`` (read by :mod:`.records`).

Every plain-text file is one document; every line of a ``.jsonl`` file and every row of a
parquet file is one document (its ``text_field``). Files are de-duplicated by their real path
(a file reached twice, through a link or two overlapping paths, is read once), and directory
links are followed once (loops are cut). While walking a directory, hidden entries, binary
files (a NUL byte in the first 8 KiB, unless named like parquet or compressed ``.jsonl``),
anything that is not a regular file (pipes, sockets, devices), run directories (a
``config.json`` beside a ``metrics.jsonl``, or a comparison's ``compare.json``) and prepared
token shards (a ``manifest.json`` of ``data prepare``) are skipped;
:class:`Scan` counts what was skipped or merged, so that the trainer can say so.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..settings import SettingError
from .packing import pack_documents
from .records import BINARY_FORMATS, file_documents
from .shards import is_prepared
from .stdlib import stdlib_documents
from .tokenizer import TOKENIZER, Tokenizer

_GLOB_CHARS = "*?["
_NON_REGULAR = "non-regular (pipe, socket, device or broken link)"


@dataclass
class Scan:
    """The files of some data paths and what the scan left out: ``merged`` paths that named
    a file already listed; ``skipped`` counts per reason; ``excluded`` run directories."""

    files: list[str] = field(default_factory=list)
    merged: int = 0
    skipped: Counter = field(default_factory=Counter)
    excluded: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """One line per thing a user should know about the scan (empty when none)."""
        out = []
        if self.merged:
            out.append(f"{self.merged} data path(s) named a file already read (the same real "
                       "file through links or overlapping paths): read once")
        for reason, n in sorted(self.skipped.items()):
            out.append(f"skipped {n} {reason} file(s) in the data directories")
        for d in self.excluded:
            out.append(f"skipped {d}: a run, comparison or prepared directory, never read as "
                       "data")
        return out


def _is_run_dir(path: str) -> bool:
    return ((os.path.isfile(os.path.join(path, "config.json")) and
             os.path.isfile(os.path.join(path, "metrics.jsonl"))) or
            os.path.isfile(os.path.join(path, "compare.json")) or is_prepared(path))


def scan_paths(paths: list[str], exclude: Iterable[str] = ()) -> Scan:
    """Expand globs and directories into a sorted, de-duplicated list of files; directories
    in ``exclude`` (e.g. the run's own directory) are never entered.

    Raises:
        ValueError: no paths, a path that does not exist, a glob or directory with no files.
    """
    if not paths:
        raise SettingError("no data paths given; pass data FILE|DIR|GLOB (or leave data "
                           "unset for the embedded stdlib corpus)", "data")
    scan = Scan()
    excluded = {os.path.realpath(e) for e in exclude}
    found: list[str] = []
    for path in paths:
        if any(c in path for c in _GLOB_CHARS):
            matches = sorted(glob.glob(path, recursive=True))
            if not matches:
                raise ValueError(f"data glob {path!r} matches nothing")
            for m in matches:
                if os.path.isdir(m):
                    found.extend(_walk(m, scan, excluded))
                elif os.path.isfile(m):
                    found.append(m)
                else:
                    scan.skipped[_NON_REGULAR] += 1
        elif os.path.isdir(path):
            files = _walk(path, scan, excluded)
            if not files:
                raise ValueError(f"data directory {path!r} holds no readable text files")
            found.extend(files)
        elif os.path.isfile(path):
            if _is_binary(path):
                raise ValueError(f"data file {path!r} is binary (a NUL byte in its first 8 KiB), "
                                 "not text; pass text files, or a directory (binary files in "
                                 "directories are skipped)")
            found.append(path)
        elif os.path.exists(path):
            raise ValueError(f"data path {path!r} is not a regular file or directory (a device, "
                             "pipe or socket); pass files, directories or globs of text")
        else:
            raise ValueError(f"data path {path!r} does not exist (pass files, directories or "
                             "globs such as 'data/**/*.txt')")
    unique: dict[str, str] = {}
    for f in found:
        real = os.path.realpath(f)
        if real in unique:
            scan.merged += 1
        else:
            unique[real] = f
    scan.files = list(unique.values())
    return scan


def resolve_paths(paths: list[str]) -> list[str]:
    """The files of ``paths`` (see :func:`scan_paths`)."""
    return scan_paths(paths).files


def _walk(root: str, scan: Scan, excluded: set[str]) -> list[str]:
    out, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back to a directory already walked
            dirnames[:] = []
            continue
        seen.add(real)
        if real in excluded or (dirpath != root and _is_run_dir(dirpath)):
            scan.excluded.append(dirpath)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name.startswith("."):
                continue
            if not os.path.isfile(path):  # pipes, sockets, devices, broken links
                scan.skipped[_NON_REGULAR] += 1
            elif _is_binary(path):
                scan.skipped["binary"] += 1
            else:
                out.append(path)
    return out


def _is_binary(path: str) -> bool:
    """A NUL byte in the first 8 KiB, unless the name is that of a binary text format."""
    if path.endswith(BINARY_FORMATS):
        return False
    try:
        with open(path, "rb") as f:
            return b"\0" in f.read(8192)
    except OSError:
        return True


def read_documents(paths: list[str], text_field: str = "text",
                   stats: Counter | None = None) -> Iterator[str]:
    """Documents of ``paths`` (see :func:`scan_paths` and
    :func:`~.records.file_documents`), in file order; ``stats`` (if given) counts replaced
    invalid UTF-8 bytes (``"replaced_bytes"``) and the files holding them
    (``"replaced_files"``).

    Raises:
        ValueError: unreadable files, invalid JSON lines, or a record without a string
            ``text_field``.
    """
    stats = Counter() if stats is None else stats
    for path in resolve_paths(paths):
        yield from file_documents(path, text_field, stats)


@dataclass
class Corpus:
    """A packed token stream, the files it came from, and what a user should know about how
    they were read (:meth:`Scan.notes`, replaced bytes)."""

    tokens: np.ndarray
    files: list[str]
    notes: list[str]


def load_corpus(paths: list[str] | None = None, text_field: str = "text",
                exclude: Iterable[str] = (), tokenizer: Tokenizer = TOKENIZER) -> Corpus:
    """:func:`load_tokens` with the files read and notes on what was skipped, merged or
    replaced; directories in ``exclude`` are never read."""
    if not paths:
        return Corpus(pack_documents(stdlib_documents(), tokenizer), [], [])
    scan = scan_paths(paths, exclude)
    stats: Counter = Counter()
    tokens = pack_documents(read_documents(scan.files, text_field, stats), tokenizer)
    notes = scan.notes()
    if stats["replaced_bytes"]:
        notes.append(f"{stats['replaced_bytes']:,} byte(s) of invalid UTF-8 in "
                     f"{stats['replaced_files']} file(s) were read as U+FFFD")
    return Corpus(tokens, scan.files, notes)


def load_tokens(paths: list[str] | None = None, text_field: str = "text",
                tokenizer: Tokenizer = TOKENIZER) -> np.ndarray:
    """The packed token stream of ``paths``, or of the embedded stdlib corpus when ``paths``
    is empty or ``None``. Raises ``ValueError`` for missing or empty data."""
    return load_corpus(paths, text_field, tokenizer=tokenizer).tokens
