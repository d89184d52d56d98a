"""Options generated from described settings, and the one map from setting names to flags.

A field made with :func:`lighthouse_attn.settings.setting` becomes ``--field-name`` with its
help text, choices and type; every generated option defaults to ``None`` ("not given"), so a
command can fill it from a preset or the dataclass default. Errors that name settings
(:class:`~lighthouse_attn.settings.SettingError`) are shown with the command's flags.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, fields

from ..settings import SettingError


def flag(name: str) -> str:
    """``seq_len`` -> ``--seq-len``."""
    return "--" + name.replace("_", "-")


def add_setting_options(parser: argparse.ArgumentParser, cls: type, *,
                        from_preset: bool = False, group: str | None = None) -> None:
    """Add one option per described field of the dataclass ``cls`` (fields with help text,
    not marked ``cli=False``), in the argument groups the fields name (or all in ``group``);
    ``from_preset``: every default is a preset's."""
    for f in fields(cls):
        meta = f.metadata
        if "help" not in meta or not meta.get("cli", True):
            continue
        argument_group(parser, group or meta.get("group") or "options").add_argument(
            meta.get("flag", flag(f.name)), **_kwargs(f, meta, from_preset))


def argument_group(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """The parser's argument group called ``title``, made on first use."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def _kwargs(f, meta, from_preset: bool) -> dict:
    kind = str(f.type)
    default = f.default if f.default is not MISSING else None
    if from_preset:  # the group's title says so
        shown = None
    elif meta.get("preset"):
        shown = "the preset's"
    elif default is None or isinstance(default, bool) or kind.startswith("list"):
        shown = None
    else:
        shown = default
    text = meta["help"] + (f" (default: {shown})" if shown is not None and
                           "default:" not in meta["help"] else "")
    kw: dict = {"dest": f.name, "default": None, "help": text}
    if kind == "bool":
        if meta.get("negatable"):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["action"] = "store_false" if meta.get("flag", "").startswith("--no-") \
                else "store_true"
        return kw
    if kind.startswith("list[") and "separator" in meta:  # one argument: "a,b,c"
        sep = meta["separator"]
        kw["type"] = lambda text: [x for x in text.split(sep) if x]
        kw["metavar"] = meta.get("metavar", f"A{sep}B")
        return kw
    if kind.startswith("list["):
        kw["nargs"] = "+"
        kind = kind[5:-1]
    base = kind.split("|")[0].strip()
    kw["type"] = {"int": int, "float": float}.get(base, str)
    for hint in ("choices", "metavar"):
        if hint in meta:
            kw[hint] = meta[hint]
    return kw


def given_settings(args: argparse.Namespace, cls: type) -> dict:
    """The described fields of ``cls`` that the command line gave (not ``None``)."""
    return {f.name: getattr(args, f.name) for f in fields(cls)
            if getattr(args, f.name, None) is not None}


def add_runtime_options(parser: argparse.ArgumentParser, *, precision: bool = True,
                        threads: bool = True, title: str = "system") -> None:
    """``--device``, ``--precision`` and ``--threads``, the same in every command."""
    from ..runtime import DEVICES, PRECISIONS  # imports torch: only for commands that run

    g = argument_group(parser, title)
    g.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: CUDA when available, else CPU (default: auto)")
    if precision:
        g.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="auto: bf16 autocast on GPU, fp32 on CPU (default: auto)")
    if threads:
        g.add_argument("--threads", type=int,
                       help="CPU threads (default: the cores that are free at start)")


def with_flags(err: ValueError, parser: argparse.ArgumentParser | None) -> str:
    """The message of ``err``, with the settings a :class:`SettingError` names written as the
    parser's flags (``seq_len`` -> ``--seq-len``) where the parser has them."""
    message = str(err)
    if not isinstance(err, SettingError) or parser is None:
        return message
    options = _flags_by_dest(parser)
    for name in err.fields:
        if name in options:
            message = re.sub(rf"(?<![\w-]){re.escape(name)}\b", options[name], message)
    return message


def _flags_by_dest(parser: argparse.ArgumentParser) -> dict[str, str]:
    found: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.update(_flags_by_dest(sub))
        elif action.option_strings:
            long = [o for o in action.option_strings if o.startswith("--")]
            found.setdefault(action.dest, (long or action.option_strings)[0])
    return found
