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


def run_cli(fn: Callable, args: list[str] | None = None, prog: str | None = None, as_positional: bool = True) -> int:
    """Run a typed function as a command (jsonargparse turns its signature and docstring into flags) and return
    the exit status: 0; 2 after printing ``error: <message>`` for a UserError; 130 when interrupted."""
    from jsonargparse import CLI

    try:
        CLI(fn, args=args, prog=prog, as_positional=as_positional)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
