"""``data prepare``: tokenize inputs once into memory-mappable shards with a manifest.

The inputs (text files, directories, globs, ``.jsonl`` / ``.jsonl.gz`` / ``.jsonl.zst``,
``.parquet``) are parts (a file, or a row group of a parquet file), grouped in order into units
of work of about :data:`UNIT_BYTES`.
Worker processes tokenize units in parallel; each writes its own shards (at most
``shard_tokens`` tokens each) under temporary names and renames them when complete. Shards are
listed in unit order, so the corpus is the same stream whatever the number of workers, and
the same as reading the inputs directly (:func:`~.corpus.load_corpus`).

A prepare resumes: after every finished unit the main process appends it to
``prepare_state.jsonl`` (once the unit's shards are complete); a restarted prepare with the
same settings skips the units recorded there and deletes any other shard files (a unit a
kill cut short). The
manifest is written last, so a directory without ``manifest.json`` is never read as a corpus.

With ``holdout_fraction`` each document goes, by a hash of its place in the inputs, to the
held-out corpus ``OUT/heldout/`` (a prepared directory of its own) with that probability.
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import shutil
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..jsonfile import write_json
from ..progress import bar_disable
from ..settings import SettingError
from .corpus import scan_paths
from .packing import BATCH_DOCS, encode_documents, token_dtype
from .records import file_documents, parquet_file
from .shards import FORMAT, MANIFEST, is_prepared, read_manifest
from .tokenizer import BYTES, Tokenizer
from .tokenizers import load_tokenizer

STATE = "prepare_state.jsonl"
HELDOUT = "heldout"
DEFAULT_SHARD_TOKENS = 1 << 26
_DTYPES = ("auto", "uint16", "uint32")


UNIT_BYTES = 1 << 25
"""Consecutive inputs are grouped into units of work of about this many bytes (a large file or
row group is a unit of its own), so that many small files do not make many small shards."""


@dataclass(frozen=True)
class Part:
    """One input: a file, or one row group of a parquet file."""

    path: str
    row_group: int | None
    size: int  # bytes


@dataclass(frozen=True)
class Unit:
    """One unit of work: consecutive parts, tokenized in order into their own shards."""

    index: int
    parts: tuple[Part, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)


@dataclass(frozen=True)
class _Job:
    unit: Unit
    out: str
    tokenizer: str
    sep_token: str | None
    identity: str  # JSON of the tokenizer's identity
    text_field: str
    dtype: str
    shard_tokens: int
    holdout_fraction: float


def prepare(inputs: list[str], out: str | os.PathLike, tokenizer: str = BYTES,
            sep_token: str | None = None, text_field: str = "text",
            holdout_fraction: float = 0.0, shard_tokens: int = DEFAULT_SHARD_TOKENS,
            dtype: str = "auto", workers: int | None = None, overwrite: bool = False,
            progress: bool = True, echo=print) -> dict:
    """Tokenize ``inputs`` into shards under ``out``; returns the manifest.

    Args:
        inputs: files, directories or globs (see :func:`~.corpus.scan_paths`).
        out: the output directory (created; resumed when it holds an unfinished prepare with
            the same settings).
        tokenizer, sep_token: see :func:`~.tokenizers.load_tokenizer`.
        text_field: field of ``.jsonl`` records and column of parquet files.
        holdout_fraction: share of documents written to ``out/heldout/`` instead.
        shard_tokens: most tokens per shard file.
        dtype: ``auto`` (``uint16`` when the vocabulary fits, else ``uint32``), ``uint16`` or
            ``uint32``.
        workers: processes (default: the CPU cores).
        overwrite: replace an earlier prepare with other settings.

    Raises:
        ValueError: bad settings, unreadable or empty inputs, an ``out`` that holds something
            else.
    """
    tok = load_tokenizer(tokenizer, sep_token)
    dtype = _check_settings(tok, dtype, holdout_fraction, shard_tokens, workers)
    out = Path(out)
    scan = scan_paths(inputs, exclude=[out])
    parts = _parts(scan.files, text_field)
    units = _units(parts)
    settings = {"inputs": [{"path": os.path.abspath(p.path), "row_group": p.row_group,
                            "bytes": p.size} for p in parts],
                "tokenizer": tok.identity(), "text_field": text_field, "dtype": dtype,
                "shard_tokens": shard_tokens, "holdout_fraction": holdout_fraction}
    finished = _finished(out, settings, overwrite)
    if finished is not None:
        echo(f"{out} is already prepared with these inputs and settings")
        return finished
    done = _resume_state(out, settings, overwrite, echo)
    for note in scan.notes():
        echo(f"note: {note}")
    identity = json.dumps(tok.identity(), sort_keys=True)
    jobs = [_Job(u, str(out), tokenizer if tokenizer == BYTES else os.path.abspath(tokenizer),
                 sep_token, identity, text_field, dtype, shard_tokens, holdout_fraction)
            for u in units if str(u.index) not in done]
    _remove_strays(out, done)
    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs)))
    with tqdm(total=sum(j.unit.size for j in jobs), unit="B", unit_scale=True,
              desc="preparing", disable=bar_disable(progress)) as bar, \
            _journal(out / STATE, settings, fresh=not done) as journal:
        for result in _run(jobs, workers):
            done[str(result["unit"])] = result
            journal.write(json.dumps(result) + "\n")
            journal.flush()  # after the unit's shards were written, flushed and renamed
            bar.update(result["bytes"])
    return _finish(out, settings, units, done, tok)


@contextlib.contextmanager
def _journal(path: Path, settings: dict, fresh: bool):
    """The state file, opened for appending finished units (a fresh one starts with the
    settings line)."""
    with open(path, "w" if fresh else "a") as f:
        if fresh:
            f.write(json.dumps({"settings": settings}) + "\n")
            f.flush()
        yield f


def _read_journal(path: Path) -> tuple[dict | None, dict]:
    """The settings and finished units recorded in a state file (a torn last line, from a
    kill in mid-write, is ignored)."""
    settings, units = None, {}
    for i, line in enumerate(path.read_text().splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            break
        if i == 0:
            settings = record.get("settings") if isinstance(record, dict) else None
        elif isinstance(record, dict) and "unit" in record:
            units[str(record["unit"])] = record
    return settings, units


def _check_settings(tok: Tokenizer, dtype: str, holdout_fraction: float, shard_tokens: int,
                    workers: int | None) -> str:
    if dtype not in _DTYPES:
        raise SettingError(f"dtype must be one of {', '.join(_DTYPES)} (got {dtype!r})",
                           "dtype")
    fits = token_dtype(tok.vocab_size).name
    if dtype == "auto":
        dtype = fits
    elif dtype == "uint16" and fits != "uint16":
        raise SettingError(f"the tokenizer's vocabulary ({tok.vocab_size:,} tokens) does not "
                           "fit uint16 (at most 65,536): use dtype uint32 or auto", "dtype")
    if not 0 <= holdout_fraction < 1:
        raise SettingError(f"holdout_fraction must be in [0, 1) (got {holdout_fraction})",
                           "holdout_fraction")
    if shard_tokens < 1:
        raise SettingError(f"shard_tokens must be >= 1 (got {shard_tokens})", "shard_tokens")
    if workers is not None and workers < 1:
        raise SettingError(f"workers must be >= 1 (got {workers})", "workers")
    return dtype


def _parts(files: list[str], text_field: str) -> list[Part]:
    parts: list[Part] = []
    for path in files:
        if path.endswith(".parquet"):
            meta = parquet_file(path, text_field).metadata
            parts += [Part(path, g, meta.row_group(g).total_byte_size)
                      for g in range(meta.num_row_groups)]
        else:
            parts.append(Part(path, None, os.path.getsize(path)))
    return parts


def _units(parts: list[Part]) -> list[Unit]:
    """Consecutive parts grouped until a group reaches :data:`UNIT_BYTES`."""
    units: list[Unit] = []
    group: list[Part] = []
    for part in parts:
        group.append(part)
        if sum(p.size for p in group) >= UNIT_BYTES:
            units.append(Unit(len(units), tuple(group)))
            group = []
    if group:
        units.append(Unit(len(units), tuple(group)))
    return units


def _finished(out: Path, settings: dict, overwrite: bool) -> dict | None:
    """The manifest when ``out`` is already prepared with ``settings``; ``None`` when it is
    not prepared (or holds another prepare that ``overwrite`` will replace)."""
    if not is_prepared(out):
        return None
    manifest = read_manifest(out)
    if manifest.get("settings") == settings:
        return manifest
    if not overwrite:
        raise SettingError(f"{out} holds a prepared corpus of other inputs or settings; "
                           "choose another out, or pass overwrite to replace it", "out",
                           "overwrite")
    return None


def _resume_state(out: Path, settings: dict, overwrite: bool, echo) -> dict:
    """The units an unfinished prepare of ``out`` with ``settings`` recorded (``{}`` for a
    fresh start, after clearing what ``overwrite`` replaces)."""
    state = out / STATE
    if state.is_file():
        saved, units = _read_journal(state)
        if saved == settings and not overwrite:
            echo(f"resuming the prepare in {out}: {len(units)} unit(s) done")
            return units
        if not overwrite:
            raise SettingError(f"{out} holds an unfinished prepare of other inputs or "
                               "settings; repeat that command to finish it, or pass overwrite",
                               "overwrite")
    if out.exists() and not out.is_dir():
        raise SettingError(f"out {out} is a file; choose a directory", "out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SettingError(f"out {out} is not empty; choose an empty or new directory, or "
                               "pass overwrite (it removes an earlier prepare's files only)",
                               "out", "overwrite")
        _clear(out)
    out.mkdir(parents=True, exist_ok=True)
    return {}


def _clear(out: Path) -> None:
    """Remove what a prepare writes (shards, manifests, state, the held-out corpus)."""
    for p in out.iterdir():
        if p.name in (MANIFEST, STATE) or (p.name.startswith(("shard-", ".tmp-shard-"))):
            p.unlink()
        elif p.name == HELDOUT and p.is_dir():
            shutil.rmtree(p)


def _remove_strays(out: Path, done: dict) -> None:
    """Delete shard files (and temporaries) of units not recorded as finished."""
    keep = {s["file"] for r in done.values() for split in ("train", HELDOUT)
            for s in r[split]}
    for d in (out, out / HELDOUT):
        if d.is_dir():
            for p in d.iterdir():
                rel = p.relative_to(out).as_posix()
                if p.name.startswith((".tmp-shard-", "shard-")) and rel not in keep:
                    p.unlink()


def _run(jobs: list[_Job], workers: int):
    if workers == 1:
        yield from map(_prepare_unit, jobs)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, initializer=_one_thread) as pool:
        yield from pool.imap_unordered(_prepare_unit, jobs)


def _one_thread() -> None:
    """A worker tokenizes on one core (the pool is the parallelism; no oversubscription)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


class _ShardWriter:
    """Shards ``shard-UNIT-K.bin`` of one unit and split, each at most ``limit`` tokens,
    written under a temporary name and renamed when complete; a shard's ``documents`` are the
    separators it holds (the documents that end in it)."""

    def __init__(self, out: Path, prefix: str, dtype: np.dtype, limit: int,
                 sep_id: int) -> None:
        self.out, self.prefix, self.dtype, self.limit = out, prefix, dtype, limit
        self.sep_id = sep_id
        self.shards: list[dict] = []
        self._file, self._tokens, self._docs, self._crc = None, 0, 0, 0

    def add(self, ids: np.ndarray) -> None:
        ids = ids.astype(self.dtype.newbyteorder("<"), copy=False)
        while len(ids):
            if self._file is None:
                self.out.mkdir(parents=True, exist_ok=True)
                self._tmp = self.out / f".tmp-{self._name()}"
                self._file = open(self._tmp, "wb")
            take = ids[:self.limit - self._tokens]
            data = take.tobytes()
            self._file.write(data)
            self._crc = zlib.crc32(data, self._crc)
            self._tokens += len(take)
            self._docs += int(np.count_nonzero(take == self.sep_id))
            ids = ids[len(take):]
            if self._tokens == self.limit:
                self.close()

    def _name(self) -> str:
        return f"{self.prefix}-{len(self.shards):04d}.bin"

    def close(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        name = self._name()
        os.replace(self._tmp, self.out / name)
        self.shards.append({"file": name, "tokens": self._tokens, "documents": self._docs,
                            "crc32": self._crc})
        self._file, self._tokens, self._docs, self._crc = None, 0, 0, 0


@functools.lru_cache(maxsize=1)
def _process_tokenizer(spec: str, sep_token: str | None, identity: str) -> Tokenizer:
    """The tokenizer of a worker process, read once for all its units; ``identity`` (the JSON
    of the prepare's tokenizer identity) keys the cache and is checked."""
    tok = load_tokenizer(spec, sep_token)
    if json.dumps(tok.identity(), sort_keys=True) != identity:
        raise ValueError(f"tokenizer {spec} changed while the corpus was being prepared; run "
                         "the prepare again")
    return tok


def _prepare_unit(job: _Job) -> dict:
    """Tokenize one unit into its shards; returns their records."""
    tok = _process_tokenizer(job.tokenizer, job.sep_token, job.identity)
    dtype = np.dtype(job.dtype)
    out = Path(job.out)
    prefix = f"shard-{job.unit.index:06d}"
    writers = {split: _ShardWriter(out if split == "train" else out / HELDOUT, prefix, dtype,
                                   job.shard_tokens, tok.sep_id) for split in ("train", HELDOUT)}
    stats: Counter = Counter()
    batch: list[tuple[str, str]] = []

    def flush() -> None:
        for split, writer in writers.items():
            texts = [text for where, text in batch if where == split]
            if texts:
                writer.add(encode_documents(texts, tok, dtype))
        batch.clear()

    docs = (doc for part in job.unit.parts
            for doc in file_documents(part.path, job.text_field, stats, part.row_group))
    for i, text in enumerate(docs):
        if text:
            batch.append((_split(job, i), text))
            if len(batch) == BATCH_DOCS:
                flush()
    flush()
    for w in writers.values():
        w.close()
    return {"unit": job.unit.index, "bytes": job.unit.size,
            "replaced_bytes": stats["replaced_bytes"],
            "train": writers["train"].shards,
            HELDOUT: [dict(s, file=f"{HELDOUT}/{s['file']}") for s in writers[HELDOUT].shards]}


def _split(job: _Job, doc: int) -> str:
    """``"heldout"`` for a ``holdout_fraction`` share of documents, by a hash of the
    document's place (unit, index)."""
    if job.holdout_fraction <= 0:
        return "train"
    h = zlib.crc32(f"{job.unit.index}:{doc}".encode()) / 2**32
    return HELDOUT if h < job.holdout_fraction else "train"


def _finish(out: Path, settings: dict, units: list[Unit], done: dict, tok: Tokenizer) -> dict:
    """Write the held-out manifest, then the corpus manifest, then drop the state file."""
    def manifest(split: str, prefix: str = "") -> dict:
        shards = [dict(s, file=s["file"][len(prefix):]) for u in units
                  for s in done[str(u.index)][split]]
        return {"format": FORMAT, "tokenizer": tok.identity(), "dtype": settings["dtype"],
                "split": split, "tokens": sum(s["tokens"] for s in shards),
                "documents": sum(s["documents"] for s in shards), "shards": shards,
                "replaced_bytes": sum(r["replaced_bytes"] for r in done.values()),
                "settings": settings}

    train = manifest("train")
    if train["tokens"] == 0:
        raise ValueError("the inputs hold no text (every document is empty)")
    if settings["holdout_fraction"] > 0:
        held = manifest(HELDOUT, HELDOUT + "/")
        if held["tokens"] == 0:
            raise SettingError(f"holdout_fraction {settings['holdout_fraction']} held out no "
                               "document; raise it or prepare held-out text separately",
                               "holdout_fraction")
        write_json(out / HELDOUT / MANIFEST, held)
    write_json(out / MANIFEST, train)
    (out / STATE).unlink(missing_ok=True)
    return train
