"""Recipes and the prepared-folder format: splits, manifests, atomic writes, bad-input messages, HTML alignment."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from plmgen.data import load_manifest, load_pairs, monolingual_text, prepare, read_text_files
from plmgen.data import splits as splits_mod
from plmgen.data.bible import read_verses
from plmgen.data.libreoffice import align_help_trees, help_lang, help_package
from plmgen.data.splits import SPLITS, Pair, clean_pairs, split_by_group
from plmgen.errors import UserError


def _write_tsv(path: Path, n: int) -> list[tuple[str, str]]:
    pairs = [(f"Satz Nummer {i} ist hier.", f"Sentence number {i} is here.") for i in range(n)]
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return pairs


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- user data --------------------------------------------------------------------------------------------------


def test_tsv_recipe_splits_and_manifest(tmp_path):
    pairs = _write_tsv(tmp_path / "d.tsv", 200)
    out = prepare("tsv", out=str(tmp_path / "out"), path=str(tmp_path / "d.tsv"), src="de", tgt="en", quiet=True)
    m = load_manifest(out)
    assert m["recipe"] == "tsv" and (m["src"], m["tgt"]) == ("de", "en")
    assert m["pairs"] == {"train": 180, "dev": 10, "test": 10}  # 5 % of 200 each
    assert set(m["sha256"]) == {f"{s}.{lang}" for s in SPLITS for lang in ("de", "en")}
    for name, digest in m["sha256"].items():
        assert _sha(out / name) == digest
    loaded = {s: load_pairs(out, s) for s in SPLITS}
    assert sorted(p for s in SPLITS for p in loaded[s]) == sorted(pairs)  # nothing lost, nothing invented
    sources = [{p[0] for p in loaded[s]} for s in SPLITS]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    mono = monolingual_text(out, "dev")
    assert mono == [p[0] for p in loaded["dev"]] + [p[1] for p in loaded["dev"]]


def test_parallel_recipe_sizes_seed_and_determinism(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("".join(f"quelle {i}\n" for i in range(100)), encoding="utf-8")
    b.write_text("".join(f"target {i}\n" for i in range(100)), encoding="utf-8")
    kw = dict(src_file=str(a), tgt_file=str(b), dev_size=7, test_size=5, quiet=True)
    m1 = load_manifest(prepare("parallel", out=str(tmp_path / "o1"), **kw))
    m2 = load_manifest(prepare("parallel", out=str(tmp_path / "o2"), **kw))
    m3 = load_manifest(prepare("parallel", out=str(tmp_path / "o3"), seed=1, **kw))
    assert m1["pairs"] == {"train": 88, "dev": 7, "test": 5}
    assert m1["sha256"] == m2["sha256"]  # same input + seed -> byte-identical splits
    assert m1["sha256"] != m3["sha256"]  # the seed matters
    for s, t in load_pairs(tmp_path / "o1", "train"):
        assert s.split()[1] == t.split()[1]  # still aligned line by line


def test_duplicate_sources_dropped_and_counted(tmp_path):
    (tmp_path / "d.tsv").write_text("a b\tx\na b\ty\nc d\tz\ne f\tw\n", encoding="utf-8")
    out = prepare("tsv", out=str(tmp_path / "o"), path=str(tmp_path / "d.tsv"), dev_size=1, test_size=1, quiet=True)
    m = load_manifest(out)
    assert m["dropped"] == {"duplicate source": 1} and sum(m["pairs"].values()) == 3


def test_reuse_and_force(tmp_path, capsys):
    _write_tsv(tmp_path / "d.tsv", 50)
    kw = dict(out=str(tmp_path / "o"), path=str(tmp_path / "d.tsv"))
    out = prepare("tsv", **kw)
    created = load_manifest(out)["created_at"]
    stamp = (out / "train.src").stat().st_mtime_ns
    prepare("tsv", **kw)
    assert "reusing" in capsys.readouterr().err
    assert (out / "train.src").stat().st_mtime_ns == stamp
    (out / "train.src").write_text("tampered\n", encoding="utf-8")  # no longer matches the manifest
    with pytest.raises(UserError, match="--force"):
        prepare("tsv", **kw)
    prepare("tsv", force=True, **kw)
    assert load_manifest(out)["created_at"] >= created
    assert _sha(out / "train.src") == load_manifest(out)["sha256"]["train.src"]
    with pytest.raises(UserError, match="already holds tsv"):
        prepare("tsv", src="de", **kw)


def test_force_never_replaces_a_folder_that_is_not_ours(tmp_path):
    _write_tsv(tmp_path / "d.tsv", 50)
    thesis = tmp_path / "o" / "thesis.tex"
    thesis.parent.mkdir()
    thesis.write_text("years of work", encoding="utf-8")
    with pytest.raises(UserError, match="not a plmgen prepared folder"):
        prepare("tsv", out=str(thesis.parent), path=str(tmp_path / "d.tsv"), force=True, quiet=True)
    assert thesis.read_text(encoding="utf-8") == "years of work" and len(list(thesis.parent.iterdir())) == 1
    # A prepared folder with an extra file of the user's in it is not replaced either.
    out = prepare("tsv", out=str(tmp_path / "p"), path=str(tmp_path / "d.tsv"), quiet=True)
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(UserError, match="notes.txt"):
        prepare("tsv", out=str(out), path=str(tmp_path / "d.tsv"), force=True, seed=3, quiet=True)
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    # An empty folder is simply filled.
    (tmp_path / "empty").mkdir()
    assert load_manifest(prepare("tsv", out=str(tmp_path / "empty"), path=str(tmp_path / "d.tsv"), quiet=True))


@pytest.mark.parametrize("out", [".", "..", "", "~"])
def test_out_refuses_current_parent_and_home(tmp_path, monkeypatch, out):
    _write_tsv(tmp_path / "d.tsv", 50)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UserError, match="refusing to write a data folder there"):
        prepare("tsv", out=out, path="d.tsv", force=True, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_reuse_only_when_options_and_input_content_match(tmp_path, capsys):
    _write_tsv(tmp_path / "d.tsv", 50)
    kw = dict(out=str(tmp_path / "o"), path=str(tmp_path / "d.tsv"), quiet=False)
    prepare("tsv", **kw)
    prepare("tsv", **kw)
    assert "reusing" in capsys.readouterr().err
    with pytest.raises(UserError, match="--seed"):
        prepare("tsv", seed=1, **kw)
    with pytest.raises(UserError, match="--dev_size"):
        prepare("tsv", dev_size=4, **kw)
    _write_tsv(tmp_path / "d.tsv", 60)  # the input changed under the same name
    with pytest.raises(UserError, match="input file contents"):
        prepare("tsv", **kw)
    out = prepare("tsv", force=True, **kw)
    assert sum(load_manifest(out)["pairs"].values()) == 60


@pytest.mark.parametrize("flag", ["dev_size", "test_size"])
def test_negative_holdout_sizes_are_refused(tmp_path, flag):
    _write_tsv(tmp_path / "d.tsv", 100)
    with pytest.raises(UserError, match=f"--{flag} must be >= 0, got -5"):
        prepare("tsv", out=str(tmp_path / "o"), path=str(tmp_path / "d.tsv"), quiet=True, **{flag: -5})
    assert not (tmp_path / "o").exists()


def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    _write_tsv(tmp_path / "d.tsv", 50)
    real, calls = splits_mod.sha256_file, []

    def flaky(path):
        if ".tmp-" in str(path):  # only the new folder's files (not the old folder's check)
            calls.append(path)
        if len(calls) == 3 and ".tmp-" in str(path):  # after two split files are written and hashed
            raise OSError("disk full (injected)")
        return real(path)

    monkeypatch.setattr(splits_mod, "sha256_file", flaky)
    with pytest.raises(OSError, match="injected"):
        prepare("tsv", out=str(tmp_path / "data" / "o"), path=str(tmp_path / "d.tsv"), quiet=True)
    assert list((tmp_path / "data").iterdir()) == []  # no out dir, no temp dir

    # A forced rebuild that fails keeps the previous complete folder untouched.
    monkeypatch.setattr(splits_mod, "sha256_file", real)
    out = prepare("tsv", out=str(tmp_path / "data" / "o"), path=str(tmp_path / "d.tsv"), quiet=True)
    before = {p.name: _sha(p) for p in out.iterdir()}
    calls.clear()
    monkeypatch.setattr(splits_mod, "sha256_file", flaky)
    with pytest.raises(OSError):
        prepare("tsv", out=str(out), path=str(tmp_path / "d.tsv"), force=True, seed=5, quiet=True)
    assert {p.name: _sha(p) for p in out.iterdir()} == before
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["o"]


BAD_INPUTS = {
    # name: (files to write, prepare kwargs, strings the message must contain)
    "tab count": ({"d.tsv": "ok\tfine\nno tab here\n"}, {"name": "tsv", "path": "d.tsv"}, ["d.tsv:2", "tab"]),
    "two tabs": ({"d.tsv": "a\tb\tc\n"}, {"name": "tsv", "path": "d.tsv"}, ["d.tsv:1", "found 2"]),
    "empty source": ({"d.tsv": "a\tb\n\tx\n"}, {"name": "tsv", "path": "d.tsv"}, ["d.tsv:2", "empty source"]),
    "empty target": ({"d.tsv": "a\tb\nc\td\ne\t \n"}, {"name": "tsv", "path": "d.tsv"}, ["d.tsv:3", "empty target"]),
    "too long": (
        {"d.tsv": "a\tb\n" + " ".join(["w"] * 12) + "\tx\n"},
        {"name": "tsv", "path": "d.tsv", "max_words": 10},
        ["d.tsv:2", "12 words", "limit of 10"],
    ),
    "not utf-8": ({"d.tsv": b"a\tb\nc\td\n\xff\xfe\tx\n"}, {"name": "tsv", "path": "d.tsv"}, ["d.tsv:3", "UTF-8"]),
    "count mismatch": (
        {"a.txt": "1\n2\n3\n", "b.txt": "1\n2\n"},
        {"name": "parallel", "src_file": "a.txt", "tgt_file": "b.txt"},
        ["a.txt has 3 lines", "b.txt has 2"],
    ),
    "empty parallel line": (
        {"a.txt": "1\n2\n3\n", "b.txt": "1\n\n3\n"},
        {"name": "parallel", "src_file": "a.txt", "tgt_file": "b.txt"},
        ["b.txt:2", "empty target"],
    ),
    "missing file": ({}, {"name": "tsv", "path": "nope.tsv"}, ["nope.tsv", "not found"]),
    "unknown recipe": ({}, {"name": "wmt99"}, ["wmt99", "lo-de-en", "bible-kjv-bbe", "tsv", "parallel"]),
    "tsv without path": ({}, {"name": "tsv"}, ["--path"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_messages(tmp_path, case):
    files, kwargs, needles = BAD_INPUTS[case]
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (tmp_path / name).write_bytes(data)
    kwargs = {k: str(tmp_path / v) if k in ("path", "src_file", "tgt_file") else v for k, v in kwargs.items()}
    with pytest.raises(UserError) as e:
        prepare(out=str(tmp_path / "out"), quiet=True, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert not (tmp_path / "out").exists()


def test_read_text_files_skips_blank_lines_and_reports_bad_bytes(tmp_path):
    (tmp_path / "a.txt").write_text("Erster  Absatz.\n\n  \nZweiter\tAbsatz.\r\n", encoding="utf-8")
    assert read_text_files([tmp_path / "a.txt"]) == ["Erster Absatz.", "Zweiter Absatz."]
    (tmp_path / "b.txt").write_bytes(b"fine\nalso fine\nbad \xc3(\n")
    with pytest.raises(UserError, match=r"b\.txt:3: not valid UTF-8"):
        read_text_files([tmp_path / "b.txt"])


# --- splitting and cleaning --------------------------------------------------------------------------------------


def test_split_by_group_keeps_groups_whole_and_meets_sizes():
    pairs = [Pair(f"s{g}-{i}", f"t{g}-{i}", group=f"file{g}.html") for g in range(40) for i in range(g % 7 + 1)]
    out = split_by_group(pairs, dev_size=15, test_size=15)
    assert len(out["dev"]) >= 15 and len(out["test"]) >= 15
    groups = [{p.group for p in out[s]} for s in SPLITS]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(len(v) for v in out.values()) == len(pairs)
    assert split_by_group(list(reversed(pairs)), 15, 15)["dev"][0].group == out["dev"][0].group  # order-free


def test_clean_pairs_reasons():
    raw = [Pair("a  b", "x\ny"), Pair("", "x"), Pair("same", "same"), Pair("a b", "z"), Pair("w " * 5, "v")]
    kept, dropped = clean_pairs(raw, max_words=4)
    assert kept == [Pair("a b", "x y")]
    assert dropped == {"empty side": 1, "untranslated (source == target)": 1, "duplicate source": 1, "over 4 words": 1}


# --- LibreOffice help alignment on a fake tree -------------------------------------------------------------------

PAGE = """<!DOCTYPE html><html><head><title>{title}</title><script>var x = "{title}";</script></head>
<body><header id="TopLeftHeader"><p dir="auto">LibreOffice Help</p></header><div id="DisplayArea">
<h1 id="hd_id1">{title}</h1>
<p id="par_id2" class="paragraph">{p2}<br><img src="x.png"></p>
<p id="par_id3"><span class="switchinline"><span hidden="true" id="MACtext_1" class="MAC">{mac}</span><span
 hidden="true" id="defaulttext_1">{ctrl}</span></span>+Shift+{key}</p>
<p id="par_id4">   </p>{extra}
</div></body></html>"""


def _help_tree(root: Path, lang: str, pages: dict[str, dict[str, str]]) -> Path:
    base = root / lang
    for rel, fields in pages.items():
        f = base / "text" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(PAGE.format(**{"extra": "", **fields}), encoding="utf-8")
    return base


def test_align_help_trees_on_fake_help(tmp_path):
    de = _help_tree(tmp_path, "de", {
        "swriter/a.html": dict(title="Tastatur", p2="Drücken Sie  die\n Taste.", mac="Wahl", ctrl="Strg", key="Pfeil"),
        "scalc/b.html": dict(title="Zellen", p2="Eine Zelle.", mac="Wahl", ctrl="Strg", key="Ende",
                             extra='<p id="par_only_de">Nur deutsch.</p>'),
        "shared/c.html": dict(title="Nur hier", p2="x", mac="m", ctrl="c", key="k"),
    })
    en = _help_tree(tmp_path, "en-US", {
        "swriter/a.html": dict(title="Keyboard", p2="Press the key.", mac="Option", ctrl="Ctrl", key="Arrow"),
        "scalc/b.html": dict(title="Cells", p2="A cell.", mac="Option", ctrl="Ctrl", key="End"),
    })
    pairs, dropped = align_help_trees(de, en, quiet=True)
    got = {(p.group, p.src.strip(), p.tgt.strip()) for p in pairs if p.src.strip()}
    assert ("text/swriter/a.html", "Tastatur", "Keyboard") in got
    assert ("text/swriter/a.html", "Strg+Shift+Pfeil", "Ctrl+Shift+Arrow") in got  # default variant, MAC skipped
    assert ("text/scalc/b.html", "Eine Zelle.", "A cell.") in got
    assert all("LibreOffice Help" not in p.tgt and "var x" not in p.tgt for p in pairs)  # header/script ignored
    assert dropped == {"id missing in target language": 1, "help file missing in target language": 4}
    kept, more = clean_pairs(pairs, max_words=100)
    assert more["empty side"] == 2  # the blank par_id4 of each aligned page
    assert ("Drücken Sie die Taste.", "Press the key.") in {(p.src, p.tgt) for p in kept}


def test_help_language_codes():
    assert [help_lang(c) for c in ("en", "de", "pt-br", "EN-us")] == ["en-US", "de", "pt-BR", "en-US"]
    assert [help_package(c) for c in ("en", "pt-br", "fr")] == [
        "libreoffice-help-en-us", "libreoffice-help-pt-br", "libreoffice-help-fr"]


# --- Bible package reader on a fake wheel -------------------------------------------------------------------------


def _fake_bible_wheel(path: Path, text: str, chapters: str) -> Path:
    module = (
        "from pythonbible.books import Book\nraise RuntimeError('must not be imported')\n"
        f"bible = Bible(Version.X, {text!r}, {{1001001: 0}}, {{1001001: 3}}, {chapters}, "
        "{Book.GENESIS: 'Genesis', Book.EXODUS: 'Exodus'}, {}, False)\n"
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pythonbible_fake/html_bible.py", module)
    return path


def test_read_verses_walks_markers_not_offsets(tmp_path):
    text = "<sup>1</sup> In the [beginning]. <sup>2</sup> Two.<p><sup>1</sup> Next chapter.</p><sup>1</sup> Exodus."
    wheel = _fake_bible_wheel(tmp_path / "f.whl", text, "{Book.GENESIS: {1: 2, 2: 1}, Book.EXODUS: {1: 1}}")
    verses, titles = read_verses(wheel)
    assert {k: " ".join(v.split()) for k, v in verses.items()} == {
        ("GENESIS", 1, 1): "In the [beginning].", ("GENESIS", 1, 2): "Two.",
        ("GENESIS", 2, 1): "Next chapter.", ("EXODUS", 1, 1): "Exodus.",
    }
    assert titles == {"GENESIS": "Genesis", "EXODUS": "Exodus"}
    bad = _fake_bible_wheel(tmp_path / "g.whl", text, "{Book.GENESIS: {1: 3}, Book.EXODUS: {1: 1}}")
    with pytest.raises(UserError, match="g.whl"):
        read_verses(bad)


# --- the real benchmarks (network: apt / PyPI) --------------------------------------------------------------------


def _check_benchmark(out: Path, min_pairs: int) -> dict:
    m = load_manifest(out)
    assert sum(m["pairs"].values()) >= min_pairs
    assert m["pairs"]["dev"] >= 1000 and m["pairs"]["test"] >= 1000
    for name, digest in m["sha256"].items():
        assert _sha(out / name) == digest
    assert all(s["version"] for s in m["sources"])
    return m


@pytest.mark.slow
@pytest.mark.network
def test_lo_de_en_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("PLMGEN_CACHE", str(tmp_path / "cache"))
    out = prepare("lo-de-en", out=str(tmp_path / "lo"), quiet=True)
    m = _check_benchmark(out, 20_000)
    assert m["groups"]["dev"] > 10 and m["group_unit"] == "help file"
    dev_src = {s for s, _ in load_pairs(out, "dev")}
    assert not dev_src & {s for s, _ in load_pairs(out, "train")}
    assert any("Strg" in s for s in dev_src | {s for s, _ in load_pairs(out, "test")})


@pytest.mark.slow
@pytest.mark.network
def test_bible_kjv_bbe_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("PLMGEN_CACHE", str(tmp_path / "cache"))
    out = prepare("bible-kjv-bbe", out=str(tmp_path / "bible"), quiet=True)
    _check_benchmark(out, 25_000)
    everything = {p for split in SPLITS for p in load_pairs(out, split)}
    assert ("In the beginning God created the heaven and the earth.",
            "At the first God made the heaven and the earth.") in everything  # Genesis 1:1 aligned
