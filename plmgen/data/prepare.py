"""``prepare``: build a benchmark or user data folder (train/dev/test + manifest) from one recipe name.

Recipes (each module owns its source; :mod:`plmgen.data.splits` owns cleaning, splitting and the folder format):

* ``lo-de-en``       German -> English LibreOffice help (Debian packages), split by help file.
                     ``--src``/``--tgt`` pick other help languages (fr, es, it, nl, pt-br ...).
* ``bible-kjv-bbe``  King James -> Basic English Bible (PyPI packages), split by book.
* ``tsv``            your ``--path`` file of ``source<TAB>target`` lines, split randomly (seeded).
* ``parallel``       your ``--src_file``/``--tgt_file`` line-parallel files, split randomly (seeded).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from plmgen.data.bible import prepare_bible
from plmgen.data.libreoffice import prepare_libreoffice
from plmgen.data.splits import Pair, clean_pairs, default_holdout_size, split_by_group, split_random, verify_dataset
from plmgen.data.splits import MANIFEST, refuse_foreign, write_dataset
from plmgen.files import sha256_file
from plmgen.data.userdata import parallel_pairs, tsv_pairs
from plmgen.errors import UserError

RECIPES = ("lo-de-en", "bible-kjv-bbe", "tsv", "parallel")
DEFAULT_LANGS = {"lo-de-en": ("de", "en"), "bible-kjv-bbe": ("kjv", "bbe"), "tsv": ("src", "tgt")}
DEFAULT_LANGS["parallel"] = DEFAULT_LANGS["tsv"]
BENCHMARK_HOLDOUT = 1500  # pairs in dev and in test for the benchmarks: >= 1,000 even after a bad group draw


def cache_dir(kind: str, cache: str | None) -> Path:
    """``cache`` if given, else ``$PLMGEN_CACHE/<kind>``, else ``~/.cache/plmgen/<kind>`` (kind: debs, wheels)."""
    if cache:
        return Path(cache).expanduser()
    return Path(os.environ.get("PLMGEN_CACHE") or Path.home() / ".cache" / "plmgen").expanduser() / kind


def prepare(
    name: str,
    out: str | None = None,
    src: str | None = None,
    tgt: str | None = None,
    path: str | None = None,
    src_file: str | None = None,
    tgt_file: str | None = None,
    dev_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    max_words: int = 100,
    cache: str | None = None,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """Prepare a data folder with {train,dev,test}.{src,tgt} and manifest.json; returns its path.

    Args:
        name: recipe: lo-de-en, bible-kjv-bbe, tsv or parallel.
        out: output folder (default data/<name>, or data/lo-<src>-<tgt> for other help languages).
        src: source language code (recipe default: de, kjv, or "src" for user data; also the file suffix).
        tgt: target language code (recipe default: en, bbe, or "tgt").
        path: tsv recipe: file of source<TAB>target lines.
        src_file: parallel recipe: source segments, one per line.
        tgt_file: parallel recipe: target segments, line i translating line i of src_file.
        dev_size: pairs held out for dev (default 1500 for benchmarks; 5 % capped at 1000 for user data).
        test_size: pairs held out for test (same defaults as dev_size).
        seed: shuffle seed of the user-data split (benchmarks split by a fixed hash of file/book names).
        max_words: longest segment in words; benchmarks drop longer pairs, user data raises an error.
        cache: folder for downloaded .deb/.whl files (default $PLMGEN_CACHE/<debs|wheels> or ~/.cache/plmgen/...).
        force: rebuild even if out already holds a complete prepared folder.
        quiet: no progress output.
    """
    src, tgt, out_dir = _languages_and_folder(name, out, src, tgt, max_words)
    console = Console(stderr=True, quiet=quiet)
    plan = _plan(name, dev_size, test_size, seed, max_words, path, src_file, tgt_file)
    if out_dir.exists() and not _may_replace(out_dir, name, src, tgt, plan.settings, plan.inputs, force):
        manifest = verify_dataset(out_dir)
        console.print(f"reusing {out_dir} ({manifest['pairs']}); pass --force to rebuild")
        return out_dir

    started = time.perf_counter()
    splits, dropped, sources, group_unit = _split(name, src, tgt, plan, seed, max_words, cache, console)
    if not splits["train"]:
        raise UserError(f"recipe {name}: no training pairs left after filtering (see --max_words)")

    manifest = {"recipe": name, "sources": sources, "settings": plan.settings}
    write_dataset(out_dir, splits, src, tgt, manifest, dropped, group_unit)
    counts = ", ".join(f"{s} {len(v)}" for s, v in splits.items())
    console.print(f"wrote {out_dir}: {counts} pairs in {time.perf_counter() - started:.1f}s")
    return out_dir


def _languages_and_folder(name: str, out: str | None, src: str | None, tgt: str | None,
                          max_words: int) -> tuple[str, str, Path]:
    """Check the recipe, --max_words and the two language codes; resolve and check the output folder."""
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    if max_words < 1:
        raise UserError(f"--max_words must be positive, got {max_words}")
    default_src, default_tgt = DEFAULT_LANGS[name]
    src, tgt = src or default_src, tgt or default_tgt
    if src == tgt:
        raise UserError(f"--src and --tgt are both {src!r}; the two sides need different file suffixes")
    if out is None:
        renamed = name == "lo-de-en" and (src, tgt) != (default_src, default_tgt)
        out = f"data/lo-{src}-{tgt}" if renamed else f"data/{name}"
    out_dir = check_out_dir(out)
    refuse_foreign(out_dir)  # before any input is read: the folder's safety comes first
    return src, tgt, out_dir


@dataclass
class _Plan:
    """What a run will build, known before any download: the manifest's settings, the holdout sizes and, for user
    data, its hashes, sources and cleaned pairs (benchmarks: None until downloaded)."""

    settings: dict
    dev_n: int
    test_n: int
    inputs: list[str] | None = None
    sources: list[dict[str, str]] | None = None
    pairs: list[Pair] | None = None
    dropped: Counter | None = None


def _plan(name: str, dev_size: int | None, test_size: int | None, seed: int, max_words: int, path: str | None,
          src_file: str | None, tgt_file: str | None) -> _Plan:
    for flag, size in (("--dev_size", dev_size), ("--test_size", test_size)):
        if size is not None and size < 0:
            raise UserError(f"{flag} must be >= 0, got {size}")
    settings: dict = {"max_words": max_words}
    if name in ("lo-de-en", "bible-kjv-bbe"):
        dev_n, test_n = dev_size or BENCHMARK_HOLDOUT, test_size or BENCHMARK_HOLDOUT
        unit = "help file" if name == "lo-de-en" else "book"
        settings.update(dev_size=dev_n, test_size=test_n, split="by " + unit + " (sha1 order)")
        return _Plan(settings, dev_n, test_n)  # inputs: the recipe's own download, versioned in the manifest
    raw, sources = _user_pairs(name, path, src_file, tgt_file, max_words)
    # Over-long/empty lines already raised; cleaning here only removes duplicate sources (no train/test leak).
    pairs, more = clean_pairs(raw, max_words, drop_identical=False)
    dev_n = default_holdout_size(len(pairs)) if dev_size is None else dev_size
    test_n = default_holdout_size(len(pairs)) if test_size is None else test_size
    settings.update(dev_size=dev_n, test_size=test_n, seed=seed, split="random (seeded)")
    return _Plan(settings, dev_n, test_n, [s["sha256"] for s in sources], sources, pairs, more)


def _split(name: str, src: str, tgt: str, plan: _Plan, seed: int, max_words: int, cache: str | None,
           console: Console) -> tuple[dict, Counter, list[dict[str, str]], str | None]:
    """Download and clean a benchmark and split it by group, or split user data at random
    -> (splits, dropped pairs per reason, sources, group unit or None)."""
    if name == "lo-de-en":
        raw, dropped, sources = prepare_libreoffice(src, tgt, cache_dir("debs", cache), console)
        group_unit = "help file"
    elif name == "bible-kjv-bbe":
        raw, dropped, sources = prepare_bible(src, tgt, cache_dir("wheels", cache), console)
        group_unit = "book"
    else:
        return split_random(plan.pairs, plan.dev_n, plan.test_n, seed), Counter() + plan.dropped, plan.sources, None
    pairs, more = clean_pairs(raw, max_words)
    return split_by_group(pairs, plan.dev_n, plan.test_n), dropped + more, sources, group_unit


def _user_pairs(
    name: str, path: str | None, src_file: str | None, tgt_file: str | None, max_words: int
) -> tuple[list[Pair], list[dict[str, str]]]:
    if name == "tsv":
        if not path:
            raise UserError("recipe tsv needs --path FILE.tsv (source<TAB>target per line)")
        return tsv_pairs(path, max_words), [_input_source(path)]
    if not src_file or not tgt_file:
        raise UserError("recipe parallel needs --src_file A and --tgt_file B (one segment per line, same count)")
    pairs = parallel_pairs(src_file, tgt_file, max_words)
    return pairs, [_input_source(src_file), _input_source(tgt_file)]


def _input_source(path: str) -> dict[str, str]:
    return {"file": str(Path(path).resolve()), "sha256": sha256_file(Path(path))}


def check_out_dir(out: str) -> Path:
    """``--out`` as a Path, refusing folders whose replacement would take other things with it: the current folder
    or one above it, the home folder, the filesystem root and the plmgen checkout itself; and plain files."""
    out_dir = Path(out).expanduser()
    resolved = out_dir.resolve()
    here = Path.cwd().resolve()
    repo = Path(__file__).resolve().parents[2]
    guarded = {Path.home().resolve(), repo, *repo.parents, here, *here.parents}
    if not str(out).strip() or resolved in guarded:
        raise UserError(f"--out {out!r}: refusing to write a data folder there (it would replace {resolved}); "
                        "give a folder of its own, e.g. data/NAME")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    return out_dir


def _may_replace(out_dir: Path, name: str, src: str, tgt: str, settings: dict, inputs: list[str] | None,
                 force: bool) -> bool:
    """Whether ``out_dir`` (which exists) may be rebuilt: it is empty, or plmgen's prepared folder and either
    ``force`` or it holds other data. False: reuse it as it is. Raises UserError for a folder that is not ours, and
    for a stale/other prepared folder without ``force``."""
    if not any(out_dir.iterdir()):
        return True
    refuse_foreign(out_dir)
    manifest = verify_dataset(out_dir)
    if manifest is None:
        if force:
            return True
        raise UserError(f"{out_dir}: exists but is not a complete prepared folder; pass --force to rebuild it")
    differs = _differences(manifest, name, src, tgt, settings, inputs)
    if force:
        return True
    if differs:
        raise UserError(f"{out_dir}: already holds {manifest.get('recipe')} {manifest.get('src')}->"
                        f"{manifest.get('tgt')} prepared with other {', '.join(differs)}; pass --force or another --out")
    return False




def _differences(manifest: dict, name: str, src: str, tgt: str, settings: dict, inputs: list[str] | None) -> list[str]:
    """Which of recipe, languages, options and input file contents differ from the folder's manifest."""
    differs = [k for k, v in (("recipe", name), ("src", src), ("tgt", tgt)) if manifest.get(k) != v]
    held = manifest.get("settings") or {}
    differs += [f"--{k}" for k, v in settings.items() if k != "split" and held.get(k) != v]
    if inputs is not None and [s.get("sha256") for s in manifest.get("sources") or []] != inputs:
        differs.append("input file contents")
    return differs
