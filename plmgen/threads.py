"""The CPU runtime of every command: ``--threads`` (torch's CPU thread count, said at start, with a one-line
warning when the machine is busy) and the memory allocator's thresholds.

Default thread count: torch's own (one thread per core this process may run on). When other jobs keep the cores
busy, more threads than free cores spin against them (OpenMP) and a run can slow down several-fold; ``--threads 1``
helps then (see README, "Busy machines").

Allocator: torch's CPU tensors come from glibc's ``malloc``, which by default hands blocks above a (dynamic)
threshold back to the kernel when they are freed and trims the heap's free top; a training step that frees its
activations every step then page-faults them in again the next one (5,000–16,000 faults per step of ``bench train``'s
plm, ~25 ms). :func:`keep_freed_memory` keeps freed memory of up to 32 MiB per block in the process for reuse.
"""

from __future__ import annotations

import ctypes
import os
import platform
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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # the largest M_MMAP_THRESHOLD glibc accepts on 64-bit machines


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks (up to 32 MiB each, and the heap's free top up to 2 GiB) for reuse
    instead of returning them to the kernel; True when applied (glibc only; elsewhere a no-op). The resident memory
    then stays near the process's peak between steps instead of shrinking and growing again; numerics are
    untouched."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def setup_threads(threads: int | None) -> int:
    """Apply ``--threads`` (None keeps torch's default) and :func:`keep_freed_memory`; returns the thread count.
    Said later by :func:`say_threads`, when the work starts (a bad flag found after this still gets its one-line
    error alone)."""
    import torch

    keep_freed_memory()
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
