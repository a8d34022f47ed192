"""The one exception type for bad user input (a flag, a file, a line), as opposed to a bug in plmgen."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input the user can fix. The message is one line naming the flag or ``file:line``.

    The CLI prints ``error: <message>`` and exits with status 2 instead of showing a traceback, so the message must
    say on its own what is wrong and where. Newlines are folded so a careless caller cannot break that contract.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
