"""Documents of one input file, streamed: plain text (the whole file is one document),
``.jsonl`` / ``.jsonl.gz`` / ``.jsonl.zst`` (one document per line, its ``text_field``) and
``.parquet`` (one document per row of the ``text_field`` column, read in record batches with
``pyarrow``; never the whole file at once).

Bytes that are not UTF-8 become U+FFFD; a ``stats`` counter counts them (``"replaced_bytes"``)
and the files holding them (``"replaced_files"``).
"""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter
from collections.abc import Iterator

from ..settings import SettingError

COMPRESSED_JSONL = (".jsonl.gz", ".jsonl.zst")
BINARY_FORMATS = (".parquet", *COMPRESSED_JSONL)
"""Inputs that are binary files but hold text (a directory walk keeps them)."""
PARQUET_BATCH_ROWS = 1024


def file_documents(path: str, text_field: str = "text", stats: Counter | None = None,
                   row_group: int | None = None) -> Iterator[str]:
    """The documents of ``path`` in file order (``row_group``: only that row group of a
    parquet file).

    Raises:
        ValueError: an unreadable file, invalid JSON, a record or table without a string
            ``text_field``, or a missing library for the format.
    """
    replaced = Counter()
    try:
        if path.endswith(".parquet"):
            yield from _parquet_documents(path, text_field, row_group)
        elif path.endswith((".jsonl", *COMPRESSED_JSONL)):
            with _open_lines(path) as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        yield _record_text(path, lineno, _decode(line, replaced), text_field)
        else:
            with open(path, "rb") as f:
                yield _decode(f.read(), replaced)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ValueError(f"cannot read data file {path!r}: {reason}") from None
    finally:
        if replaced and stats is not None:
            stats["replaced_bytes"] += replaced["bytes"]
            stats["replaced_files"] += 1


def _open_lines(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise ValueError(f"{path}: reading .jsonl.zst needs the zstandard package: pip "
                             "install zstandard (or decompress it to .jsonl)") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"),
                                                                           closefd=True))
    return open(path, "rb")


def _decode(data: bytes, replaced: Counter) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        replaced["bytes"] += text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
        return text


def _record_text(path: str, lineno: int, line: str, text_field: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}:{lineno}: a JSON {type(record).__name__}, not an object "
                         f"with a string field {text_field!r}; write one object per line")
    value = record.get(text_field)
    if value is None:
        raise SettingError(f"{path}:{lineno}: no field {text_field!r} (keys: "
                           f"{sorted(record)}); choose the field with text_field", "text_field")
    if not isinstance(value, str):
        raise SettingError(f"{path}:{lineno}: field {text_field!r} is a JSON "
                           f"{_json_type(value)}, not a string; point text_field at the "
                           "field that holds the text", "text_field")
    return value


def _json_type(value) -> str:
    return {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"
            }.get(type(value), type(value).__name__)


def parquet_file(path: str, text_field: str):
    """The ``pyarrow.parquet.ParquetFile`` of ``path``, checked to have a string
    ``text_field`` column."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"{path}: reading parquet needs pyarrow: pip install "
                         "'lighthouse-attn[data]'") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid and OSError subclasses
        raise ValueError(f"cannot read parquet file {path!r}: {err}") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise SettingError(f"parquet file {path!r} has no column {text_field!r} (columns: "
                           f"{names[:10]}); choose the column with text_field", "text_field")
    kind = str(pf.schema_arrow.field(text_field).type)
    if kind not in ("string", "large_string", "string_view"):
        raise SettingError(f"column {text_field!r} of {path!r} holds {kind}, not text; point "
                           "text_field at the column that holds the text", "text_field")
    return pf


def _parquet_documents(path: str, text_field: str, row_group: int | None) -> Iterator[str]:
    pf = parquet_file(path, text_field)
    groups = range(pf.num_row_groups) if row_group is None else [row_group]
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=list(groups),
                                 columns=[text_field]):
        for value in batch.column(0).to_pylist():
            if value:
                yield value
