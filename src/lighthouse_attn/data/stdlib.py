"""The embedded default corpus: the running Python's standard-library source.

One long document per top-level package (all its ``.py`` files, in path order, each introduced
by a ``# file: PATH`` line) and one per top-level module: cross-file code, the long-context
agent use case. Needs no download.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterator

from ..settings import SettingError

_SKIP = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_root() -> str:
    """Directory of the running interpreter's standard library."""
    return sysconfig.get_paths()["stdlib"]


def _py_files(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP and not d.startswith("."))
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    return out


def _read(path: str, root: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f"# file: {os.path.relpath(path, root)}\n{f.read()}"


def stdlib_documents(root: str | None = None) -> Iterator[str]:
    """Documents of the standard library at ``root`` (default: :func:`stdlib_root`), sorted by
    name. Raises ``ValueError`` if it holds no Python source."""
    root = root or stdlib_root()
    if not os.path.isdir(root):
        raise SettingError(f"the standard-library directory {root!r} does not exist; pass "
                           "data", "data")
    found = False
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name in _SKIP or name.startswith("."):
            continue
        if os.path.isdir(path):
            files = _py_files(path)
            if files:
                found = True
                yield "\n".join(_read(f, root) for f in files)
        elif name.endswith(".py"):
            found = True
            yield _read(path, root)
    if not found:
        raise SettingError(f"no Python source under {root!r} (is the standard library "
                           "stripped to .pyc?); pass data FILE|DIR instead", "data")
