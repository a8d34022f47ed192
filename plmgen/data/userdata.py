"""The user's own text: a TSV of pairs, two line-parallel files, or plain text files for pre-training.

Unlike the benchmark recipes, nothing here is silently skipped: an empty or over-long line in a file the user wrote
is almost always a mistake (an off-by-one between two files, a paragraph pasted whole), so it is reported as a
``UserError`` naming ``file:line`` instead of quietly shifting or dropping data.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable

from plmgen.data.splits import Pair
from plmgen.errors import UserError


def read_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 file (``-``: standard input), without line ends. Only ``\\n`` (or ``\\r\\n``) ends a line.

    ``str.splitlines`` would also break at U+2028, form feeds etc., which silently misaligns parallel files.
    """
    if str(path) == "-":
        return _decode_lines(sys.stdin.buffer.read(), "<stdin>")
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found")
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a text file")
    return _decode_lines(data, path)


def _decode_lines(data: bytes, path) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {column})")
    text = text.removeprefix("\ufeff")  # a BOM from Windows editors is not part of the first segment
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty one
    return [line.removesuffix("\r") for line in lines]


def _check_segment(text: str, path: Path, lineno: int, side: str, max_words: int) -> str:
    if not text.strip():
        raise UserError(f"{path}:{lineno}: empty {side} segment (every line needs text on both sides)")
    n = len(text.split())
    if n > max_words:
        raise UserError(f"{path}:{lineno}: {side} has {n} words, over the limit of {max_words} (see --max_words)")
    return text


def tsv_pairs(path: str | os.PathLike, max_words: int) -> list[Pair]:
    """Pairs from ``source<TAB>target`` lines."""
    path = Path(path)
    pairs = []
    for i, line in enumerate(read_lines(path), start=1):
        if line.count("\t") != 1:
            raise UserError(
                f"{path}:{i}: expected exactly one tab (source<TAB>target), found {line.count(chr(9))}"
            )
        src, tgt = line.split("\t")
        pairs.append(
            Pair(_check_segment(src, path, i, "source", max_words), _check_segment(tgt, path, i, "target", max_words))
        )
    return pairs


def parallel_pairs(src_file: str | os.PathLike, tgt_file: str | os.PathLike, max_words: int) -> list[Pair]:
    """Pairs from two files with one segment per line, line i of one translating line i of the other."""
    src_file, tgt_file = Path(src_file), Path(tgt_file)
    src, tgt = read_lines(src_file), read_lines(tgt_file)
    if len(src) != len(tgt):
        raise UserError(
            f"{src_file} has {len(src)} lines but {tgt_file} has {len(tgt)}; parallel files need the same count"
        )
    return [
        Pair(_check_segment(s, src_file, i, "source", max_words), _check_segment(t, tgt_file, i, "target", max_words))
        for i, (s, t) in enumerate(zip(src, tgt), start=1)
    ]


def read_text_files(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Non-blank lines of plain UTF-8 text files, whitespace-collapsed, for pre-training or tokenizer training.

    Blank lines separate paragraphs in ordinary prose, so here they are skipped rather than reported.
    """
    out = []
    for path in paths:
        out.extend(" ".join(line.split()) for line in read_lines(path) if line.strip())
    return out
