"""``--threads``: torch's CPU thread count, said at start, with a one-line warning when the machine is busy.

Default: torch's own (one thread per core this process may run on). When other jobs keep the cores busy, more
threads than free cores spin against them (OpenMP) and a run can slow down several-fold; ``--threads 1`` helps
then (see README, "Busy machines").
"""

from __future__ import annotations

import os
import sys

from .errors import UserError


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def busy_warning(threads: int, load: float, cores: int) -> str | None:
    """The warning for ``threads`` torch threads on a machine with this 1-minute load and core count, or None."""
    if threads > 1 and load > cores:
        return (f"warning: the machine is busy (load {load:.1f} on {cores} cores); with {threads} threads each "
                f"waits for the others - if this runs slowly, try --threads 1")
    return None


def setup_threads(threads: int | None) -> int:
    """Apply ``--threads`` (None keeps torch's default); returns the count. Said later by :func:`say_threads`,
    when the work starts (a bad flag found after this still gets its one-line error alone)."""
    import torch

    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise UserError(f"--threads must be an integer >= 1, got {threads!r}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def say_threads(file=None) -> int:
    """Print the thread count and, when the machine is busy, the one-line warning (to stderr by default)."""
    import torch

    n = torch.get_num_threads()
    file = file or sys.stderr
    print(f"threads: {n} (cores usable: {usable_cores()}; set with --threads)", file=file, flush=True)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return n
    warning = busy_warning(n, load, os.cpu_count() or 1)
    if warning:
        print(warning, file=file, flush=True)
    return n
