"""The on-disk split format every recipe writes and the rest of plmgen reads.

A prepared data folder holds ``{train,dev,test}.{src}`` and ``{train,dev,test}.{tgt}`` (one segment per line,
parallel, UTF-8) and ``manifest.json`` (where the data came from, counts, drops, a sha256 of every file). Recipes
produce :class:`Pair` lists; this module cleans them, splits them deterministically and writes the folder atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from plmgen.files import atomic_write_text, sha256_file, user_mode
from plmgen.errors import UserError

SPLITS = ("train", "dev", "test")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Pair:
    """One aligned segment. ``group`` is the unit kept whole when splitting (a help file, a Bible book)."""

    src: str
    tgt: str
    group: str = ""


def normalize(text: str) -> str:
    """Collapse every run of whitespace (incl. newlines, NBSP) to one space: one segment must fit on one line."""
    return " ".join(text.split())


def clean_pairs(pairs: Iterable[Pair], max_words: int, drop_identical: bool = True) -> tuple[list[Pair], Counter]:
    """Normalize, then drop empty / untranslated / over-long / duplicate-source pairs, counting each reason.

    Duplicates are dropped by *source* text (first kept): repeated boilerplate would otherwise land in train and test
    alike and inflate BLEU.
    """
    kept: list[Pair] = []
    dropped: Counter = Counter()
    seen: set[str] = set()
    for p in pairs:
        src, tgt = normalize(p.src), normalize(p.tgt)
        if not src or not tgt:
            dropped["empty side"] += 1
        elif drop_identical and src == tgt:
            dropped["untranslated (source == target)"] += 1
        elif len(src.split()) > max_words or len(tgt.split()) > max_words:
            dropped[f"over {max_words} words"] += 1
        elif src in seen:
            dropped["duplicate source"] += 1
        else:
            seen.add(src)
            kept.append(Pair(src, tgt, p.group))
    return kept, dropped


def _stable_hash(key: str) -> str:
    # sha1 rather than hash(): Python salts str hashes per process, and splits must not change between runs.
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


def split_by_group(pairs: list[Pair], dev_size: int, test_size: int) -> dict[str, list[Pair]]:
    """Keep every group in exactly one split: walk groups in hash order, fill dev, then test, the rest is train.

    Hash order is a fixed pseudo-random order, so held-out groups are spread over the whole corpus; filling up to a
    pair count (instead of a fixed share of groups) guarantees the held-out sizes however uneven the groups are.
    """
    by_group: dict[str, list[Pair]] = {}
    for p in pairs:
        by_group.setdefault(p.group, []).append(p)
    out: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for group in sorted(by_group, key=lambda g: (_stable_hash(g), g)):
        split = "dev" if len(out["dev"]) < dev_size else "test" if len(out["test"]) < test_size else "train"
        out[split].extend(by_group[group])
    return out


def default_holdout_size(n_pairs: int) -> int:
    """Dev/test size when the user gives none: 5 % of the data, at most 1,000 pairs, at least one."""
    return max(1, min(1000, n_pairs * 5 // 100))


def split_random(pairs: list[Pair], dev_size: int, test_size: int, seed: int) -> dict[str, list[Pair]]:
    """Seeded shuffle into dev/test/train; each split keeps the input's line order (easier to diff by eye)."""
    if dev_size + test_size >= len(pairs):
        raise UserError(
            f"--dev_size {dev_size} + --test_size {test_size} leaves no training pairs out of {len(pairs)}"
        )
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    dev, test = set(order[:dev_size]), set(order[dev_size : dev_size + test_size])
    out: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for i, p in enumerate(pairs):
        out["dev" if i in dev else "test" if i in test else "train"].append(p)
    return out


def write_dataset(
    out: Path,
    splits: dict[str, list[Pair]],
    src: str,
    tgt: str,
    manifest: dict[str, Any],
    dropped: Counter,
    group_unit: str | None = None,
) -> Path:
    """Write the split files + manifest into a temp folder next to ``out``, then rename it into place.

    Nothing half-written ever sits at ``out``: a crash leaves at most a hidden ``.<name>.tmp-*`` folder (removed on
    the way out when Python unwinds). An existing ``out`` is replaced only after the new folder is complete.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    user_mode(tmp, directory=True)  # becomes `out`: a normal folder, not mkdtemp's private one
    try:
        files: dict[str, str] = {}
        for split in SPLITS:
            for lang, side in ((src, 0), (tgt, 1)):
                name = f"{split}.{lang}"
                with open(tmp / name, "w", encoding="utf-8", newline="\n") as f:
                    for p in splits[split]:
                        f.write((p.src, p.tgt)[side] + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                files[name] = sha256_file(tmp / name)
        full = {
            "format_version": FORMAT_VERSION,
            **manifest,
            "src": src,
            "tgt": tgt,
            "pairs": {s: len(splits[s]) for s in SPLITS},
            "dropped": dict(sorted(dropped.items())),
            "sha256": files,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if group_unit is not None:
            full["group_unit"] = group_unit
            full["groups"] = {s: len({p.group for p in splits[s]}) for s in SPLITS}
        atomic_write_text(tmp / MANIFEST, json.dumps(full, indent=2, ensure_ascii=False) + "\n")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace_dir(new: Path, out: Path) -> None:
    if not out.exists():
        os.rename(new, out)
        return
    # Two renames: out is missing only for an instant, and never holds a mix of old and new files.
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.rename(out, old / "data")
    os.rename(new, out)
    shutil.rmtree(old, ignore_errors=True)


def verify_dataset(data_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a complete, unmodified prepared folder, or None (missing manifest, files, or hash mismatch)."""
    data_dir = Path(data_dir)
    try:
        manifest = json.loads((data_dir / MANIFEST).read_text(encoding="utf-8"))
        ok = all(sha256_file(data_dir / n) == h for n, h in manifest["sha256"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest if ok else None


def load_manifest(data_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``manifest.json`` of a prepared data folder (UserError if there is none)."""
    path = Path(data_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; prepare the data first (plmgen prepare <recipe> --out {data_dir})")
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})")


def _read_split(data_dir: Path, split: str, lang: str) -> list[str]:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = data_dir / f"{split}.{lang}"
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")
    except FileNotFoundError:
        raise UserError(f"{path}: not found (incomplete data folder? re-run prepare with --force)")
    # Only "\n" ends a line: splitlines() would also split at U+2028 & co. and misalign the two sides.
    return lines[:-1] if lines and lines[-1] == "" else lines


def load_pairs(data_dir: str | os.PathLike, split: str) -> list[tuple[str, str]]:
    """(source, target) pairs of one split of a prepared folder."""
    data_dir = Path(data_dir)
    m = load_manifest(data_dir)
    src, tgt = _read_split(data_dir, split, m["src"]), _read_split(data_dir, split, m["tgt"])
    if len(src) != len(tgt):
        raise UserError(f"{data_dir}/{split}.{m['src']} has {len(src)} lines but {split}.{m['tgt']} has {len(tgt)}")
    return list(zip(src, tgt))


def monolingual_text(data_dir: str | os.PathLike, split: str = "train") -> list[str]:
    """Both sides of one split as plain segments, source lines then target lines (for pre-training/tokenizer)."""
    data_dir = Path(data_dir)
    m = load_manifest(data_dir)
    return _read_split(data_dir, split, m["src"]) + _read_split(data_dir, split, m["tgt"])


def refuse_foreign(out_dir: Path) -> None:
    """UserError unless ``out_dir`` is missing, empty, or plmgen's prepared folder (so --force may replace it)."""
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    foreign = _foreign_entries(out_dir, entries) if entries else None
    if foreign is not None:
        raise UserError(f"{out_dir}: not a plmgen prepared folder ({foreign}); refusing to replace it, "
                        "even with --force; choose another --out")


def _foreign_entries(out_dir: Path, entries: list[str]) -> str | None:
    """None if ``out_dir`` holds plmgen's manifest and only the files it lists, else what gives it away."""
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
        listed = set(manifest["sha256"]) | {MANIFEST}
        assert isinstance(manifest["format_version"], int) and "recipe" in manifest
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return f"no readable plmgen {MANIFEST}"
    extra = [e for e in entries if e not in listed]
    return f"it also holds {extra[0]!r}" if extra else None
