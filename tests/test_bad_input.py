"""Bad input across the commands: exit 2, one ``error:`` line, no traceback, nothing outside the run's folder changed.

The cases run in-process through ``cli.main`` (and run_cli for experiments/hf_to_ckpt.py), so the whole table costs
one import of torch; the shared assets (data folder, tokenizer, a 1-step seq2seq checkpoint and damaged copies of it,
broken HF folders) are built once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from train_helpers import make_dataset, make_tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cli  # noqa: E402


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    from plmgen.config import DataConfig, ExperimentConfig, ModelConfig, ObjectiveConfig, Seq2SeqConfig, TrainConfig
    from plmgen.train import run_training

    root = tmp_path_factory.mktemp("shared")
    data = make_dataset(root, n_train=32, n_dev=4)
    tok = make_tokenizer(root, data)
    cfg = ExperimentConfig(
        name="s2s", out_dir=str(root / "run"), tokenizer=str(tok.path),
        model=ModelConfig.named("tiny", vocab_size=tok.vocab_size, mem_len=0),
        objective=ObjectiveConfig(name="seq2seq", seq2seq=Seq2SeqConfig(max_len=16)),
        data=DataConfig(kind="parallel", path=str(data), seq_len=32, batch_size=4),
        train=TrainConfig(max_steps=1, val_every=1, warmup_steps=0, progress_bar=False, log_every=1),
    )
    good = run_training(cfg).run_dir / "checkpoints" / "last.ckpt"
    ck = torch.load(good, weights_only=True)
    bad = root / "run" / "checkpoints"  # damaged copies beside the good one (they share its tokenizer)

    def variant(name, edit):
        c = torch.load(good, weights_only=True)
        edit(c)
        torch.save(c, bad / name)

    def nan(c):
        c["state_dict"]["model.word_embedding.weight"][0, 0] = float("nan")

    def huge_vocab(c):
        c["plmgen"]["config"]["model"]["vocab_size"] = 2_000_000_000

    def shape(c):
        c["state_dict"]["model.lm_bias"] = torch.zeros(7)

    def no_meta(c):
        del c["plmgen"]

    def foreign(c):  # an object a weights-only load refuses to build (torch's own message says: load it unsafely)
        from fractions import Fraction

        c["extra"] = Fraction(1, 2)

    for name, edit in (("nan.ckpt", nan), ("vocab.ckpt", huge_vocab), ("shape.ckpt", shape), ("meta.ckpt", no_meta),
                       ("foreign.ckpt", foreign)):
        variant(name, edit)
    (bad / "trunc.ckpt").write_bytes(good.read_bytes()[:5000])
    (root / "notes.txt").write_text("not a checkpoint\n", encoding="utf-8")
    (root / "in.txt").write_text("der hund\n\nrot\n", encoding="utf-8")
    (root / "hyp.txt").write_text("a\nb\n", encoding="utf-8")
    (root / "ref.txt").write_text("a\n", encoding="utf-8")
    (root / "latin1.txt").write_bytes(b"caf\xe9\n")
    (root / "d.tsv").write_text("a b\tx y\nno tab\n", encoding="utf-8")
    (root / "list.yaml").write_text("- 1\n- 2\n", encoding="utf-8")
    (root / "broken.yaml").write_text("model: {d_model: [\n", encoding="utf-8")
    (root / "keys.yaml").write_text("model:\n  nonsense: 3\n", encoding="utf-8")
    (root / "thesis").mkdir()
    (root / "thesis" / "chapter1.tex").write_text("years of work", encoding="utf-8")
    for name, files in {"hf_nocfg": {}, "hf_badjson": {"config.json": "{not json"},
                        "hf_noweights": {"config.json": json.dumps({"model_type": "xlnet", "vocab_size": 50,
                                         "d_model": 8, "n_layer": 1, "n_head": 2, "d_inner": 16})},
                        "hf_badweights": {"config.json": json.dumps({"model_type": "xlnet", "vocab_size": 50,
                                          "d_model": 8, "n_layer": 1, "n_head": 2, "d_inner": 16}),
                                          "model.safetensors": "garbage"},
                        "hf_huge": {"config.json": json.dumps({"model_type": "xlnet", "vocab_size": 2_000_000_000,
                                    "d_model": 8, "n_layer": 1, "n_head": 2, "d_inner": 16})},
                        "hf_bert": {"config.json": json.dumps({"model_type": "bert"})}}.items():
        (root / name).mkdir()
        for f, text in files.items():
            (root / name / f).write_text(text, encoding="utf-8")
    return root


P = "{shared}"  # replaced by the shared folder's path
CK = P + "/run/checkpoints/"
GEN = ["generate", "--checkpoint", CK + "last.ckpt", "--input", P + "/hyp.txt", "--quiet", "true"]
TRAIN = ["train", "--data.path", P + "/data", "--out_dir", "run"]

CASES = {
    # prepare
    "prepare unknown recipe": (["prepare", "wmt99"], "unknown recipe"),
    "prepare tsv without path": (["prepare", "tsv", "--out", "o"], "--path"),
    "prepare missing file": (["prepare", "tsv", "--path", "nope.tsv", "--out", "o"], "not found"),
    "prepare out dot": (["prepare", "tsv", "--path", P + "/d.tsv", "--out", ".", "--force", "true"], "refusing"),
    "prepare out dotdot": (["prepare", "tsv", "--path", P + "/d.tsv", "--out", "..", "--force", "true"], "refusing"),
    "prepare force foreign": (["prepare", "tsv", "--path", P + "/d.tsv", "--out", P + "/thesis", "--force", "true"],
                              "not a plmgen prepared folder"),
    "prepare out is a file": (["prepare", "tsv", "--path", P + "/d.tsv", "--out", P + "/notes.txt"], "not a folder"),
    "prepare negative dev": (["prepare", "tsv", "--path", P + "/d.tsv", "--out", "o", "--dev_size", "-5"], "-5"),
    "prepare negative test": (["prepare", "tsv", "--path", P + "/d.tsv", "--out", "o", "--test_size", "-3"], "-3"),
    "prepare max_words 0": (["prepare", "tsv", "--path", P + "/d.tsv", "--out", "o", "--max_words", "0"], "max_words"),
    "prepare tab count": (["prepare", "tsv", "--path", P + "/d.tsv", "--out", "o"], "d.tsv:2"),
    "prepare not utf-8": (["prepare", "tsv", "--path", P + "/latin1.txt", "--out", "o"], "UTF-8"),
    "prepare same langs": (["prepare", "tsv", "--path", P + "/d.tsv", "--src", "x", "--tgt", "x"], "both"),
    "prepare parallel counts": (["prepare", "parallel", "--src_file", P + "/hyp.txt", "--tgt_file", P + "/ref.txt",
                                 "--out", "o"], "lines"),
    "prepare unknown flag": (["prepare", "tsv", "--bogus", "1"], "bogus"),
    "prepare bad int": (["prepare", "tsv", "--dev_size", "abc"], "dev_size"),
    # train (all refused before anything is written)
    "train missing config": (["train", "--config", "missing.yaml"], "missing.yaml"),
    "train yaml list": (["train", "--config", P + "/list.yaml"], "list.yaml"),
    "train yaml syntax": (["train", "--config", P + "/broken.yaml"], "broken.yaml"),
    "train yaml unknown key": (["train", "--config", P + "/keys.yaml"], "nonsense"),
    "train yaml latin1": (["train", "--config", P + "/latin1.txt"], "latin1.txt"),
    "train negative lr": (TRAIN + ["--train.lr", "-1"], "lr"),
    "train nan lr": (TRAIN + ["--train.lr", "nan"], "lr"),
    "train heads": (TRAIN + ["--model.d_model", "30", "--model.n_head", "4"], "divisible"),
    "train name dotdot": (["train", "--name", ".."], "name"),
    "train name slash": (["train", "--name", "a/b"], "name"),
    "train batch 0": (TRAIN + ["--data.batch_size", "0"], "batch_size"),
    "train objective": (TRAIN + ["--objective.name", "nope"], "objective"),
    "train mixture nan": (TRAIN + ["--objective.name", "joint", "--objective.mixture", "plm:nan"], "mixture"),
    "train precision": (TRAIN + ["--train.precision", "16"], "precision"),
    "train resume nothing": (TRAIN + ["--resume", "last"], "--resume"),
    "train resume notes": (TRAIN + ["--resume", P + "/notes.txt"], "not a readable checkpoint"),
    "train resume trunc": (TRAIN + ["--resume", CK + "trunc.ckpt"], "not a readable checkpoint"),
    "train init missing": (TRAIN + ["--init_from", "nope.ckpt"], "not found"),
    "train init nan": (TRAIN + ["--init_from", CK + "nan.ckpt"], "NaN"),
    # generate
    "generate missing ckpt": (["generate", "--checkpoint", "nope.ckpt", "--input", P + "/hyp.txt"], "not found"),
    "generate truncated": (["generate", "--checkpoint", CK + "trunc.ckpt", "--input", P + "/hyp.txt"], "readable"),
    "generate foreign objects": (["generate", "--checkpoint", CK + "foreign.ckpt", "--input", P + "/hyp.txt"],
                                 "weights-only load refuses"),
    "generate truncated zip": (["generate", "--checkpoint", CK + "trunc.ckpt", "--input", P + "/hyp.txt"], "zip"),
    "generate no meta": (["generate", "--checkpoint", CK + "meta.ckpt", "--input", P + "/hyp.txt"], "plmgen"),
    "generate nan weights": (["generate", "--checkpoint", CK + "nan.ckpt", "--input", P + "/hyp.txt"], "NaN"),
    "generate huge vocab": (["generate", "--checkpoint", CK + "vocab.ckpt", "--input", P + "/hyp.txt"], "limit"),
    "generate shape": (["generate", "--checkpoint", CK + "shape.ckpt", "--input", P + "/hyp.txt"], "shape"),
    "generate not a ckpt": (["generate", "--checkpoint", P + "/notes.txt", "--input", P + "/hyp.txt"], "readable"),
    "generate beam huge": (GEN + ["--beam", "100000"], "--beam"),
    "generate length huge": (GEN + ["--length", "100000"], "over the limit"),
    "generate length_beam 0": (GEN + ["--length_beam", "0"], "--length_beam"),
    "generate order inf": (GEN + ["--order", "parallel@inf"], "finite"),
    "generate order nan": (GEN + ["--order", "threshold@nan"], "finite"),
    "generate order unknown": (GEN + ["--order", "sideways"], "sideways"),
    "generate temperature nan": (GEN + ["--temperature", "nan"], "temperature"),
    "generate precision": (GEN + ["--precision", "16"], "precision"),
    "generate speculate": (GEN + ["--speculate", "bush"], "--speculate"),
    "generate tree sampling": (GEN + ["--speculate", "tree2", "--sample", "true"], "greedy"),
    "generate workers 0": (GEN + ["--workers", "0"], "--workers"),
    "generate empty line": (["generate", "--checkpoint", CK + "last.ckpt", "--input", P + "/in.txt"], "in.txt:2"),
    "generate input and split": (GEN + ["--split", "dev"], "exactly one"),
    "generate missing input": (["generate", "--checkpoint", CK + "last.ckpt", "--input", "nope.txt"], "not found"),
    "generate latin1 input": (["generate", "--checkpoint", CK + "last.ckpt", "--input", P + "/latin1.txt"], "UTF-8"),
    # evaluate
    "evaluate missing hyp": (["evaluate", "--hyp", "nope.txt", "--ref", P + "/ref.txt"], "nope.txt"),
    "evaluate line counts": (["evaluate", "--hyp", P + "/hyp.txt", "--ref", P + "/ref.txt"], "line counts"),
    "evaluate latin1": (["evaluate", "--hyp", P + "/latin1.txt", "--ref", P + "/latin1.txt"], "UTF-8"),
    # bench
    "bench unknown": (["bench", "nosuch"], "unknown benchmark"),
    "bench checkpoint missing": (["bench", "decode", "--checkpoint", "nope.ckpt"], "nope.ckpt"),
    "bench drafts": (["bench", "decode", "--drafts", "2,tree"], "--speculate"),
    "bench drafts too deep": (["bench", "decode", "--drafts", "4,tree5:1+1"], "depth (speculate) must be <= 4"),
    "bench drafts empty": (["bench", "decode", "--drafts", ","], "--drafts: expected"),
    "bench flag misplaced": (["bench", "backbone", "--checkpoint", CK + "last.ckpt"], "--checkpoint"),
    # experiments/hf_to_ckpt.py
    "hf missing folder": (["hf_to_ckpt", "--hf", "nope", "--out", "o/c/x.ckpt"], "not found"),
    "hf bad json": (["hf_to_ckpt", "--hf", P + "/hf_badjson", "--out", "o/c/x.ckpt"], "JSON"),
    "hf no weights": (["hf_to_ckpt", "--hf", P + "/hf_noweights", "--out", "o/c/x.ckpt"], "safetensors"),
    "hf bad weights": (["hf_to_ckpt", "--hf", P + "/hf_badweights", "--out", "o/c/x.ckpt"], "damaged"),
    "hf huge vocab": (["hf_to_ckpt", "--hf", P + "/hf_huge", "--out", "o/c/x.ckpt"], "limit"),
    "hf not xlnet": (["hf_to_ckpt", "--hf", P + "/hf_bert", "--out", "o/c/x.ckpt"], "xlnet"),
}


def _snapshot(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for f in folders for p in sorted(f.rglob("*"))}


def _run(argv: list[str]) -> int:
    try:
        if argv[0] == "hf_to_ckpt":
            from plmgen.errors import run_cli

            spec = importlib.util.spec_from_file_location("hf_to_ckpt", ROOT / "experiments" / "hf_to_ckpt.py")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return run_cli(mod.hf_to_ckpt, args=argv[1:], as_positional=False)
        return cli.main(argv)
    except SystemExit as e:  # what the process would exit with
        return e.code


def test_the_table_is_large_enough():
    assert len(CASES) >= 40
    assert {argv[0] for argv, _ in CASES.values()} == {"prepare", "train", "generate", "evaluate", "bench",
                                                       "hf_to_ckpt"}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line(shared, tmp_path, monkeypatch, capsys, case):
    argv, needle = CASES[case]
    argv = [a.replace(P, str(shared)) for a in argv]
    work = tmp_path / "cwd" / "here"  # the case's own folder; "." and ".." are refused by name, not by location
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = _snapshot(shared, tmp_path)
    rc = _run(argv)
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], (needle, lines[0])
    assert _snapshot(shared, tmp_path) == before  # nothing written or removed, here or in the shared assets
