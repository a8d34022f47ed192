"""Boolean flags are switches: bare ``--evaluate`` means true, ``--no_evaluate`` (or ``--no-evaluate``) false;
list flags repeat: ``--text A --text B`` gives ["A", "B"].

jsonargparse wants a value after every bool flag (``--evaluate true``). :func:`expand_switches` rewrites the
argument list before parsing, using the command function's signature (and the fields of its dataclass
parameters, e.g. ``--train.progress_bar``) to know which flags are booleans. An explicit value still works:
``--evaluate true``, ``--evaluate=false``.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable

LITERALS = ("true", "false")


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) is list or any(typing.get_origin(a) is list for a in typing.get_args(tp))


def _is_bool(tp: Any) -> bool:
    if tp is bool:
        return True
    args = typing.get_args(tp)  # Optional[bool] / bool | None
    return bool(args) and all(a is bool or a is type(None) for a in args) and bool in args


def list_flags(fn: Callable) -> set[str]:
    """Top-level list-typed parameters of ``fn`` (``text: list[str] | None``)."""
    params = inspect.signature(fn).parameters
    return {k for k, tp in typing.get_type_hints(fn).items() if k in params and _is_list(tp)}


def bool_flags(fn: Callable) -> set[str]:
    """Dotted names of every boolean parameter of ``fn``, recursing into dataclass-typed parameters."""
    def walk(hints: dict[str, Any], prefix: str) -> set[str]:
        found = set()
        for name, tp in hints.items():
            if _is_bool(tp):
                found.add(prefix + name)
            elif dataclasses.is_dataclass(tp):
                found |= walk(typing.get_type_hints(tp), f"{prefix}{name}.")
        return found

    params = inspect.signature(fn).parameters
    return walk({k: v for k, v in typing.get_type_hints(fn).items() if k in params}, "")


def expand_switches(fn: Callable, args: list[str]) -> list[str]:
    """``--flag`` -> ``--flag true`` and ``--no_flag`` / ``--no-flag`` -> ``--flag false`` for boolean flags of fn;
    ``--items X`` -> ``--items+ X`` (jsonargparse's append) for list flags, so repeating a flag collects values."""
    flags, lists = bool_flags(fn), list_flags(fn)
    out: list[str] = []
    for i, arg in enumerate(args):
        if not arg.startswith("--") or "=" in arg:
            out.append(arg)
            continue
        name = arg[2:].replace("-", "_")
        nxt = args[i + 1].lower() if i + 1 < len(args) else None
        if name in flags and nxt not in LITERALS:
            out += [arg, "true"]
        elif name in lists:
            out.append(f"--{name}+")
        elif name.startswith("no_") and name[3:] in flags:
            out += [f"--{name[3:]}", "false"]
        else:
            out.append(arg)
    return out
