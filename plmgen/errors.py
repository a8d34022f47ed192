"""The one exception type for bad user input (a flag, a file, a line), as opposed to a bug in plmgen."""

from __future__ import annotations

import sys
from typing import Callable


class UserError(ValueError):
    """Bad input the user can fix. The message is one line naming the flag or ``file:line``.

    The CLI prints ``error: <message>`` and exits with status 2 instead of showing a traceback, so the message must
    say on its own what is wrong and where. Newlines are folded so a careless caller cannot break that contract.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def check_config_files(args: list[str]) -> None:
    """Each ``--config FILE`` must be a readable UTF-8 YAML mapping: say so naming the file (jsonargparse's own
    messages omit it, and a non-UTF-8 file ends in a traceback there)."""
    import yaml

    paths = [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    paths += [b for a, b in zip(args, args[1:]) if a == "--config"]
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except FileNotFoundError:
            raise UserError(f"--config {path}: file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--config {path}: not a readable UTF-8 text file ({e})") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else path
            raise UserError(f"--config {where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
        if data is not None and not isinstance(data, dict):
            raise UserError(f"--config {path}: expected a mapping of settings, got a {type(data).__name__}")


class Stopped(KeyboardInterrupt):
    """A run stopped by a signal after saving its state; the CLI exits with 128 + ``signum`` (130 / 143)."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message)
        self.signum = signum


def run_cli(fn: Callable, args: list[str] | None = None, prog: str | None = None, as_positional: bool = True) -> int:
    """Run a typed function as a command (jsonargparse turns its signature and docstring into flags; boolean flags
    are switches, see plmgen.switches) and return the exit status: 0; 2 after printing ``error: <message>`` for a
    UserError; 130 / 143 when stopped by SIGINT / SIGTERM."""
    from jsonargparse import CLI

    from .switches import expand_switches

    args = expand_switches(fn, sys.argv[1:] if args is None else args)
    try:
        check_config_files(args)
        CLI(fn, args=args, prog=prog, as_positional=as_positional)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"stopped: {e}" if str(e) else "interrupted", file=sys.stderr)
        return 128 + getattr(e, "signum", 2)  # SIGINT = 2
    return 0
