"""LibreOffice help as a parallel corpus (``lo-de-en`` and friends).

Debian ships the offline help of every UI language as ``libreoffice-help-<lang>`` packages of static HTML, one tree
per language under ``usr/share/libreoffice/help/<lang>/text/``. The trees are generated from the same XML sources,
so every help file exists in each language and its paragraphs and headings carry the same ``id`` attributes
(``par_id3146957``, ``hd_id3147291`` ...). Aligning by (file, id) gives sentence-level pairs with no aligner at all.
The help file is the split unit: paragraphs of one page share terminology, and must not straddle train and test.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

from rich.console import Console

from plmgen.data.splits import Pair
from plmgen.errors import UserError
from plmgen.progress import track

HELP_ROOT = Path("usr/share/libreoffice/help")
# Elements that hold one translatable unit. Tables/lists wrap <p> elements, so taking <p> covers them too.
PARAGRAPH_TAGS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6"})
# HTML void elements never get an end tag; pushing them on the element stack would unbalance it.
VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})
SKIP_TAGS = frozenset({"script", "style", "noscript"})


def help_lang(code: str) -> str:
    """The help folder name for a user language code: ``en`` -> ``en-US``, ``pt-br`` -> ``pt-BR``, ``de`` -> ``de``."""
    code = code.strip()
    if code.lower() == "en":
        return "en-US"  # Debian has no plain "en" help; en-US is the source language of the docs
    lang, _, region = code.partition("-")
    return f"{lang.lower()}-{region.upper()}" if region else lang.lower()


def help_package(code: str) -> str:
    """The Debian package holding that language's help, e.g. ``libreoffice-help-en-us``."""
    return f"libreoffice-help-{help_lang(code).lower()}"


class _ParagraphParser(HTMLParser):
    """Collects ``{id: text}`` for paragraph-like elements, keeping one variant of each platform switch.

    Platform/module variants are all ``hidden`` spans (``id="MAC..."``, ``"WRITER..."``, ``"default..."``) and the
    help's JavaScript reveals one. We keep the ``default...`` one and skip the others: dropping all of them loses
    "Ctrl" from "Ctrl+Shift+Arrow Down"; keeping all glues "Option Ctrl" or "LibreOffice - Preferences Tools - Options".
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: dict[str, str] = {}
        self._stack: list[str] = []
        self._skip_depth: int | None = None  # stack depth where a hidden/script element started
        self._para: tuple[int, str, list[str]] | None = None  # (depth, id, text parts) of the open paragraph

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID_TAGS:
            return
        self._stack.append(tag)
        a = dict(attrs)
        hidden = "hidden" in a and not (a.get("id") or "").startswith("default")
        if self._skip_depth is None and (tag in SKIP_TAGS or hidden):
            self._skip_depth = len(self._stack)
        if self._para is None and tag in PARAGRAPH_TAGS and a.get("id"):
            self._para = (len(self._stack), a["id"], [])

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <br/>, <img/>: no text, no nesting

    def handle_endtag(self, tag: str) -> None:
        if tag not in self._stack:
            return  # stray end tag: ignore rather than unwind the whole stack
        while self._stack:
            depth = len(self._stack)
            if self._skip_depth is not None and depth <= self._skip_depth:
                self._skip_depth = None
            if self._para is not None and depth <= self._para[0]:
                _, pid, parts = self._para
                # First occurrence wins: a repeated id would make the alignment ambiguous anyway.
                self.paragraphs.setdefault(pid, "".join(parts))
                self._para = None
            if self._stack.pop() == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._para is not None and self._skip_depth is None:
            self._para[2].append(data)


def extract_paragraphs(html_file: Path) -> dict[str, str]:
    """``{element id: raw text}`` of one help page (whitespace is normalized later, with the other filters)."""
    parser = _ParagraphParser()
    parser.feed(html_file.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return parser.paragraphs


def align_help_trees(src_root: Path, tgt_root: Path, quiet: bool = False) -> tuple[list[Pair], Counter]:
    """Pairs from two unpacked help language folders (``.../help/de`` and ``.../help/en-US``), grouped by file.

    Only ids present on both sides pair up; the rest is counted in the returned Counter, by reason.
    """
    src_root, tgt_root = Path(src_root), Path(tgt_root)
    files = sorted(p.relative_to(src_root).as_posix() for p in (src_root / "text").rglob("*.html"))
    if not files:
        raise UserError(f"{src_root}/text: no help .html files found (not an unpacked libreoffice-help tree?)")
    pairs: list[Pair] = []
    dropped: Counter = Counter()
    for rel in track(files, description="aligning help pages", quiet=quiet):
        tgt_file = tgt_root / rel
        src_paras = extract_paragraphs(src_root / rel)
        if not tgt_file.exists():
            dropped["help file missing in target language"] += len(src_paras)
            continue
        tgt_paras = extract_paragraphs(tgt_file)
        for pid, src_text in src_paras.items():
            if pid in tgt_paras:
                pairs.append(Pair(src_text, tgt_paras[pid], group=rel))
            else:
                dropped["id missing in target language"] += 1
    return pairs, dropped


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError(
            f"`{cmd[0]}` not found: run on Debian/Ubuntu (apt, dpkg), or put the libreoffice-help .deb files "
            f"into the cache folder (--cache or $PLMGEN_CACHE) and install dpkg-deb"
        )


def _cached_deb(cache: Path, package: str) -> Path | None:
    debs = sorted(cache.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
    return debs[-1] if debs else None  # newest download wins if several versions were fetched over time


def fetch_deb(package: str, cache: Path, console: Console) -> tuple[Path, str]:
    """The package's .deb in ``cache`` (downloaded with ``apt-get download`` unless already there) and its version."""
    cache.mkdir(parents=True, exist_ok=True)
    deb = _cached_deb(cache, package)
    if deb is None:
        with console.status(f"apt-get download {package}"):
            r = _run(["apt-get", "download", package], cwd=cache)
            if r.returncode != 0 and "locate package" in r.stderr:
                # A fresh container often has empty package lists; refresh once, then retry.
                _run(["apt-get", "update"])
                r = _run(["apt-get", "download", package], cwd=cache)
        deb = _cached_deb(cache, package)
        if r.returncode != 0 or deb is None:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"apt-get download {package} failed ({last}); is the language code right?")
    r = _run(["dpkg-deb", "-f", str(deb), "Version"])
    if r.returncode != 0:
        raise UserError(f"{deb}: not a readable .deb ({r.stderr.strip() or 'dpkg-deb failed'}); delete it and retry")
    return deb, r.stdout.strip()


def prepare_libreoffice(
    src: str, tgt: str, cache: Path, console: Console
) -> tuple[list[Pair], Counter, list[dict[str, str]]]:
    """Download, unpack and align the two help packages. Returns raw pairs, drop counts and package versions."""
    sources = []
    with tempfile.TemporaryDirectory(prefix="plmgen-lo-") as tmp:
        roots = []
        for code in (src, tgt):
            package = help_package(code)
            deb, version = fetch_deb(package, cache, console)
            sources.append({"package": package, "version": version, "file": deb.name})
            dest = Path(tmp) / package
            with console.status(f"unpacking {deb.name}"):
                r = _run(["dpkg-deb", "-x", str(deb), str(dest)])
            if r.returncode != 0:
                raise UserError(f"{deb}: dpkg-deb -x failed ({r.stderr.strip()}); delete it and retry")
            root = dest / HELP_ROOT / help_lang(code)
            if not root.is_dir():
                raise UserError(f"{deb}: has no {HELP_ROOT / help_lang(code)} folder; is {code!r} a help language?")
            roots.append(root)
        pairs, dropped = align_help_trees(roots[0], roots[1], quiet=console.quiet)
    return pairs, dropped, sources


__all__ = ["align_help_trees", "extract_paragraphs", "fetch_deb", "help_lang", "help_package", "prepare_libreoffice"]
