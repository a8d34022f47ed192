"""Atomic file writes: a file under its final name is always complete (temp file in the same folder, fsync, rename)
and gets the permissions a plain ``open``/``mkdir`` would under the user's umask."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to disk, so a rename after it never exposes an empty or partial file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def user_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a temp file or folder (mkstemp/mkdtemp make them private, rw-------) the permissions a plain
    ``open``/``mkdir`` would, under the user's umask, before it is renamed into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def temp_beside(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """``mkstemp`` in ``path``'s folder (so the final ``os.replace`` is atomic) with the user's umask permissions."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    user_mode(tmp)
    return fd, tmp


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temp file beside ``path`` for writing; when the block ends, fsync it and rename it to ``path`` (on an
    error, remove it instead): ``path`` is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder, fsync, rename (never a half-written file)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
