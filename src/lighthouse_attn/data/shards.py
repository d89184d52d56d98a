"""Prepared token shards (written by :mod:`.prepare`) and sequences streamed from them.

A prepared directory holds ``manifest.json`` and shard files: raw little-endian ``uint16`` or
``uint32`` token ids (memory-mappable), each stream ``doc SEP doc SEP ...``. The manifest
records the format, the tokenizer's identity, the dtype, the inputs, and per shard its file,
token and document counts and CRC32. The corpus is the shards' concatenation in manifest
order; sample ``i`` of length ``N`` is its tokens ``[i*N, i*N + N + 1)``, exactly as
:class:`~.packing.PackedSequences` cuts an in-memory stream, so a prepared corpus trains on
the same samples as the same text read directly.

:class:`ShardedSequences` reads each sample with positioned reads (``os.pread``): resident
memory stays flat whatever the corpus size.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..progress import bar_disable
from ..settings import SettingError
from .packing import TokenSamples

FORMAT = "lighthouse-attn-shards/1"
MANIFEST = "manifest.json"
_CHUNK = 1 << 24  # bytes per read while checking a shard


def is_prepared(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory holding a prepared manifest."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == FORMAT
    except (ValueError, OSError, AttributeError):
        return False


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a prepared directory; ``ValueError`` if it is missing or malformed."""
    file = Path(path) / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a prepared corpus ({MANIFEST}: {err}); run "
                         "lighthouse-attn data prepare") from None
    need = ("format", "tokenizer", "dtype", "shards", "tokens")
    if not isinstance(manifest, dict) or any(k not in manifest for k in need) or \
            manifest["format"] != FORMAT:
        raise ValueError(f"{file} is not a {FORMAT} manifest; prepare the corpus again with "
                         "lighthouse-attn data prepare")
    return manifest


def crc32_of_file(path: Path, progress=None) -> int:
    """CRC32 of a file, read in chunks (``progress.update(bytes)`` after each)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
            if progress is not None:
                progress.update(len(chunk))
    return crc


class ShardedSequences(TokenSamples):
    """Samples of ``seq_len + 1`` tokens streamed from a prepared directory (as
    :class:`~.packing.PackedSequences` cuts an in-memory stream).

    Args:
        path: the prepared directory.
        seq_len: tokens per sample (plus one target).
        verify: check every shard's CRC32 against the manifest (sizes are always checked).
        progress: a progress bar while verifying (on a terminal).

    Raises:
        ValueError: a malformed manifest, a missing, truncated or corrupted shard, or fewer
            tokens than one sample.
    """

    def __init__(self, path: str | os.PathLike, seq_len: int, verify: bool = True,
                 progress: bool = True) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1 (got {seq_len})")
        self.path, self.seq_len = Path(path), seq_len
        self.manifest = read_manifest(path)
        self.tokenizer = self.manifest["tokenizer"]
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        shards = self.manifest["shards"]
        self.files = [self.path / s["file"] for s in shards]
        counts = np.array([s["tokens"] for s in shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self._check(shards, verify, progress)
        self.num_samples = (self.num_tokens - 1) // seq_len
        if self.num_samples < 1:
            raise SettingError(f"{path} holds {self.num_tokens:,} tokens, fewer than one "
                               f"sequence of seq_len + 1 = {seq_len + 1:,}; add data or use "
                               f"seq_len <= {max(self.num_tokens - 1, 1):,}", "seq_len")
        self.fingerprint = zlib.crc32(json.dumps(
            [[s["tokens"], s["crc32"]] for s in shards]).encode())
        """CRC32 of the shards' sizes and checksums: tells whether a resumed run sees the same
        data."""
        self._fds: dict[int, int] = {}

    def _check(self, shards: list[dict], verify: bool, progress: bool) -> None:
        total = 0
        for shard, file in zip(shards, self.files):
            want = shard["tokens"] * self.dtype.itemsize
            size = file.stat().st_size if file.is_file() else None
            if size != want:
                what = "is missing" if size is None else f"has {size:,} bytes, not {want:,}"
                raise ValueError(f"shard {file} {what} (truncated or replaced); prepare the "
                                 "corpus again")
            total += want
        if not verify:
            return
        with tqdm(total=total, unit="B", unit_scale=True, desc="checking shards",
                  disable=bar_disable(progress), leave=False) as bar:
            for shard, file in zip(shards, self.files):
                if crc32_of_file(file, bar) != shard["crc32"]:
                    raise ValueError(f"shard {file} does not match its checksum (corrupted); "
                                     "prepare the corpus again")

    @property
    def num_tokens(self) -> int:
        """Tokens in the corpus (documents and separators)."""
        return int(self.starts[-1])

    def __len__(self) -> int:
        return self.num_samples

    def __getstate__(self) -> dict:  # open files do not travel to other processes
        return {**self.__dict__, "_fds": {}}

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            os.close(fd)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of the corpus."""
        out, size = [], self.dtype.itemsize
        k = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop:
            end = min(stop, int(self.starts[k + 1]))
            fd = self._fds.get(k)
            if fd is None:
                fd = self._fds[k] = os.open(self.files[k], os.O_RDONLY)
            offset = (start - int(self.starts[k])) * size
            data = os.pread(fd, (end - start) * size, offset)
            out.append(np.frombuffer(data, dtype=self.dtype))
            start, k = end, k + 1
        return np.concatenate(out) if len(out) > 1 else out[0]
