"""Described settings: dataclass fields that carry their own help text, and errors that name
them. A command line turns both into options and flags (``lighthouse_attn.cli.options``); the
library itself never speaks of flags."""

from __future__ import annotations

from dataclasses import MISSING, field
from typing import Any


def setting(default: Any = MISSING, *, factory: Any = MISSING, help: str, group: str = "",
            **hints: Any) -> Any:
    """A dataclass field described for users: ``help`` (one line), ``group`` (a heading), and
    optional hints for a command line: ``choices``, ``metavar``, ``flag`` (another option
    name, e.g. ``"--no-verify-data"`` for a ``True`` default), ``negatable`` (a bool with both
    ``--x`` and ``--no-x``), ``preset`` (the default comes from a preset), ``cli=False`` (not
    an option)."""
    return field(default=default, default_factory=factory,
                 metadata={"help": help, "group": group, **hints})


class SettingError(ValueError):
    """A ``ValueError`` about named settings. ``fields`` are the setting names as the message
    writes them (``seq_len``), so that a command line can show its flags (``--seq-len``)."""

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields
