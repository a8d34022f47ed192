"""generate: a tiny seq2seq checkpoint made here (trainer API, few steps) -> hypotheses, traces, tables, errors."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plmgen.config import DataConfig, ExperimentConfig, ModelConfig, ObjectiveConfig, Seq2SeqConfig, TrainConfig
from plmgen.decoding.generate import generate
from plmgen.decoding.translate import best_per_source
from plmgen.errors import UserError
from plmgen.evaluation import repetition_rate, unk_rate
from train_helpers import make_dataset, make_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from plmgen.train import run_training

    root = tmp_path_factory.mktemp("gen")
    data = make_dataset(root, n_train=64, n_dev=8)
    tok = make_tokenizer(root, data)
    cfg = ExperimentConfig(
        name="s2s", out_dir=str(root / "run"), tokenizer=str(tok.path),
        model=ModelConfig.named("tiny", vocab_size=tok.vocab_size, mem_len=0),
        objective=ObjectiveConfig(name="seq2seq", seq2seq=Seq2SeqConfig(max_len=24, length_weight=0.5)),
        data=DataConfig(kind="parallel", path=str(data), seq_len=64, batch_size=8),
        train=TrainConfig(max_steps=4, val_every=4, warmup_steps=0, progress_bar=False, log_every=1),
    )
    run = run_training(cfg).run_dir
    return run / "checkpoints" / "last.ckpt", data, root


def _inputs(root, lines):
    p = root / "in.txt"
    p.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return p


def test_generate_writes_one_line_per_input_and_a_trace(ckpt, tmp_path):
    path, data, root = ckpt
    src = _inputs(tmp_path, ["der hund sieht die katze", "rot und blau", "das haus"])
    out, trace = tmp_path / "hyp.txt", tmp_path / "trace.jsonl"
    generate(checkpoint=str(path), input=str(src), order="r2l", length="5", out=str(out), trace=str(trace), quiet=True)
    assert len(out.read_text(encoding="utf-8").split("\n")) == 4  # 3 lines + final newline
    recs = [json.loads(l) for l in trace.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in recs] == [1, 2, 3]
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path.parents[1] / "tokenizer.model"))
    hyps = out.read_text(encoding="utf-8").splitlines()
    for r, hyp in zip(recs, hyps):
        assert r["length"] == 5 and [s for step in r["steps"] for s in step] == [4, 3, 2, 1, 0]  # r2l
        # each slot's piece, in position order: sentencepiece itself turns them back into the hypothesis
        assert len(r["pieces"]) == len(r["logprobs"]) == 5 and sp.decode_pieces(r["pieces"]) == hyp == r["hyp"]
        assert all(lp <= 0 for lp in r["logprobs"]) and any(lp < 0 for lp in r["logprobs"])


def test_generate_split_with_length_predict_beam_and_evaluate(ckpt, tmp_path, capsys):
    path, data, root = ckpt
    out = tmp_path / "hyp.txt"
    runs = generate(checkpoint=str(path), split="test", limit=5, order="confidence", length="predict", length_beam=3,
                    out=str(out), evaluate=True, quiet=True)
    printed = capsys.readouterr().out
    assert len(runs[0].hyps) == 5 and len(out.read_text(encoding="utf-8").splitlines()) == 5
    assert "BLEU = " in printed and "signature: nrefs:1" in printed and "chrF = " in printed
    assert runs[0].length == "predict-beam3"


def test_generate_orders_grid_writes_table_and_plots(ckpt, tmp_path):
    path, data, root = ckpt
    folder = tmp_path / "grid"
    runs = generate(checkpoint=str(path), split="dev", limit=4, orders="l2r,parallel@2", lengths="predict,oracle",
                    out=str(folder), quiet=True)
    assert [(r.order, r.length) for r in runs] == [("l2r", "predict"), ("l2r", "oracle"), ("parallel@2", "predict"),
                                                   ("parallel@2", "oracle")]
    table = (folder / "orders.md").read_text(encoding="utf-8")
    assert table.startswith("| order | length | BLEU | chrF | rep % | ⁇ % | steps | tokens/s |") and "BLEU signature" in table
    assert "chrF signature: `nrefs:1|" in table  # every metric in the table names its signature
    assert len([l for l in table.splitlines() if l.startswith("| ")]) == 5
    assert (folder / "order_heatmap.png").stat().st_size > 0 and (folder / "bleu_vs_steps.png").stat().st_size > 0
    # filling 2 positions per step needs about half the steps of left-to-right
    l2r, par = runs[1], runs[3]
    assert par.steps < l2r.steps
    rows = [l.split("|") for l in table.splitlines()[2:] if l.startswith("| ")]
    for r, row in zip(runs, rows):
        assert len((folder / f"{r.order}.{r.length}.txt").read_text(encoding="utf-8").splitlines()) == 4
        # every order row prints its repetition and ⁇ rates beside BLEU/chrF, computed from its own hypotheses
        assert float(row[5]) == pytest.approx(repetition_rate(r.hyps), abs=0.01)
        assert float(row[6]) == pytest.approx(unk_rate(r.hyps), abs=0.01)


def test_length_beam_keeps_the_best_scoring_candidate():
    class H:
        def __init__(self, n, lp):
            self.tokens, self.logprob = [0] * n, lp

    table = {(0, 2): -3.0, (0, 4): -4.0, (0, 6): -9.0, (1, 3): -0.3, (1, 1): -0.5}

    cands = [[2, 4, 6], [3, 1]]
    best = best_per_source([H(n, table[(b, n)]) for b, c in enumerate(cands) for n in c], cands)
    assert [len(h.tokens) for h in best] == [4, 3]  # -1.0/token beats -1.5/token; -0.1 beats -0.5


@pytest.mark.parametrize("kwargs,match", [
    (dict(order="sideways"), "unknown order 'sideways'"),
    (dict(length="0"), "--length must be a positive length"),
    (dict(length="oracle"), "need references"),
    (dict(length_beam=0), "--length_beam"),
    (dict(precision="fp8"), "--precision"),
])
def test_generate_bad_flags(ckpt, tmp_path, kwargs, match):
    path, data, root = ckpt
    src = _inputs(tmp_path, ["der hund"])
    with pytest.raises(UserError, match=match):
        generate(checkpoint=str(path), input=str(src), quiet=True, **kwargs)


def test_generate_empty_source_line_names_file_and_line(ckpt, tmp_path):
    path, data, root = ckpt
    src = _inputs(tmp_path, ["der hund", "   ", "das haus"])
    with pytest.raises(UserError, match=rf"{src}:2: empty source line"):
        generate(checkpoint=str(path), input=str(src), length="3", quiet=True)


def test_generate_vocab_mismatch_is_user_error(ckpt, tmp_path):
    path, data, root = ckpt
    from plmgen.train import load_checkpoint

    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = state["plmgen"]["config"]
    cfg["model"]["vocab_size"] += 7
    emb = "model.word_embedding.weight"
    state["state_dict"][emb] = torch.cat([state["state_dict"][emb], torch.zeros(7, state["state_dict"][emb].shape[1])])
    state["state_dict"]["model.lm_bias"] = torch.cat([state["state_dict"]["model.lm_bias"], torch.zeros(7)])
    bad = path.parent / "bad-vocab.ckpt"
    torch.save(state, bad)
    load_checkpoint(bad)  # the checkpoint itself is consistent; only the tokenizer disagrees
    with pytest.raises(UserError, match="different runs"):
        generate(checkpoint=str(bad), input=str(_inputs(tmp_path, ["der hund"])), length="3", quiet=True)
    bad.unlink()


def test_generate_needs_a_length_head_for_predict(ckpt, tmp_path):
    path, data, root = ckpt
    from plmgen.decoding.translate import Translator, length_logits, load_translator

    tr = load_translator(str(path))
    plain = Translator(tr.model, torch.nn.Module(), tr.tokenizer, tr.config, "x.ckpt")
    with pytest.raises(UserError, match="no length head"):
        length_logits(plain, [[10, 11]])


def test_generate_cli_error_is_one_line(ckpt, tmp_path):
    path, data, root = ckpt
    src = _inputs(tmp_path, ["der hund", ""])
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "generate", "--checkpoint", str(path), "--input", str(src),
                        "--length", "3", "--quiet", "true"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith(f"error: {src}:2: empty source line")


def test_generation_length_logits_match_training_states(ckpt):
    """The head sees the same source states at generation ([src <sep>] alone) as in training ([src <sep> tgt])."""
    path, data, root = ckpt
    from plmgen.data.parallel import pair_batch
    from plmgen.decoding.translate import length_logits, load_translator
    from plmgen.objectives.seq2seq import batch_masks

    tr = load_translator(str(path))
    tok = tr.tokenizer
    srcs = tok.encode_batch(["der hund sieht die katze", "rot", "das haus und der baum"])
    tgts = tok.encode_batch(["the dog sees the cat", "red and blue and small", "the house"])
    batch = pair_batch(srcs, tgts, tok.sep_id, tok.pad_id)
    _, sm = batch_masks(batch, tr.config.objective.seq2seq, torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = tr.model(batch["input_ids"], batch["seg_ids"], sm.content, sm.query, sm.target_pos).h
        want = tr.length_head(h, batch["valid"] & ~batch["target"] & ~batch["functional"])
    torch.testing.assert_close(length_logits(tr, srcs), want, atol=1e-5, rtol=1e-5)


def test_generate_sampling_is_seeded_and_differs_from_greedy(ckpt, tmp_path):
    path, data, root = ckpt
    kw = dict(checkpoint=str(path), split="dev", limit=6, order="l2r", length="6", quiet=True)
    greedy = generate(**kw)[0].hyps
    a = generate(**kw, sample=True, temperature=5.0, seed=1)[0].hyps
    b = generate(**kw, sample=True, temperature=5.0, seed=1)[0].hyps
    c = generate(**kw, sample=True, temperature=5.0, seed=2)[0].hyps
    assert a == b  # same seed, same samples
    assert a != greedy and a != c  # a hot temperature really samples
    assert generate(**kw, sample=True, top_k=1, seed=3)[0].hyps == greedy  # top-1 sampling is greedy


@pytest.mark.parametrize("extra", [dict(), dict(sample=True, temperature=1.5)])
def test_random_streams_are_per_example_not_per_batch(ckpt, tmp_path, extra):
    """--order random / --sample draw from (seed, index in the input): the same output and trace whatever the
    batch size, and --limit only cuts the list."""
    path, data, root = ckpt
    kw = dict(checkpoint=str(path), split="dev", length="predict", seed=1, quiet=True, **{"order": "random", **extra})
    outs = {}
    for bs, limit in ((1, 0), (8, 0), (3, 5)):
        out, trace = tmp_path / f"h{bs}.txt", tmp_path / f"t{bs}.jsonl"
        generate(batch_size=bs, limit=limit, out=str(out), trace=str(trace), **kw)
        outs[bs] = (out.read_text(encoding="utf-8").splitlines(), trace.read_text(encoding="utf-8").splitlines())
    assert outs[1] == outs[8] and len(outs[1][0]) == 8
    assert outs[3] == (outs[1][0][:5], outs[1][1][:5])
    steps = [json.loads(l)["steps"] for l in outs[1][1]]
    if "sample" not in extra:  # same-length sentences get different permutations (not one per batch position)
        by_len = {}
        for s in steps:
            by_len.setdefault(len(s), []).append(s)
        assert any(len(v) > 1 and any(x != v[0] for x in v) for v in by_len.values()) or len(by_len) == len(steps)


def test_own_text_from_stdin_and_text_flags(ckpt, tmp_path):
    """`--input -` reads stdin, `--text` (repeatable) takes sentences from the command line; same translations as
    the file."""
    path, data, root = ckpt
    lines = ["der hund sieht die katze", "rot und blau"]
    src = _inputs(tmp_path, lines)
    base = [sys.executable, str(ROOT / "cli.py"), "generate", "--checkpoint", str(path), "--length", "4", "--quiet"]
    from_file = subprocess.run(base + ["--input", str(src)], capture_output=True, text=True, cwd=ROOT)
    from_stdin = subprocess.run(base + ["--input", "-"], input="\n".join(lines) + "\n", capture_output=True,
                                text=True, cwd=ROOT)
    from_text = subprocess.run(base + ["--text", lines[0], "--text", lines[1]], capture_output=True, text=True,
                               cwd=ROOT)
    for r in (from_file, from_stdin, from_text):
        assert r.returncode == 0, r.stderr[-2000:]
    assert len(from_file.stdout.splitlines()) == 2
    assert from_stdin.stdout == from_file.stdout == from_text.stdout
    with pytest.raises(UserError, match="exactly one of --input"):
        generate(checkpoint=str(path), input=str(src), text=["x"], quiet=True)
    with pytest.raises(UserError, match=r"--text:1: empty source line"):
        generate(checkpoint=str(path), text=[" "], quiet=True)


def test_device_flag_and_default():
    from plmgen.decoding.translate import resolve_device

    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="--device: 'gpu0' is not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")


def test_generate_on_an_explicit_device_matches_the_default(ckpt, tmp_path):
    path, data, root = ckpt
    kw = dict(checkpoint=str(path), split="dev", limit=4, order="confidence", quiet=True)
    assert generate(**kw, device="cpu")[0].hyps == generate(**kw, device="cpu", batch_size=1)[0].hyps
    with pytest.raises(UserError, match="--device"):
        generate(**kw, device="tpu:x")


def test_no_hard_coded_cpu_in_the_decoding_path():
    """Autocast, loading and tensors follow the model's device; only the device default names the CPU."""
    import re

    pat = re.compile(r"""(autocast\(|map_location=|device=|\.to\()\s*["']cpu["']""")
    for f in (ROOT / "plmgen" / "decoding").glob("*.py"):
        assert not pat.search(f.read_text(encoding="utf-8")), f"{f.name} hard-codes the CPU"


def test_generate_speculate_gives_the_sequential_output_in_fewer_passes(ckpt):
    path, data, root = ckpt
    kw = dict(checkpoint=str(path), split="dev", limit=6, order="confidence", length="8", quiet=True, device="cpu")
    seq, spec = generate(**kw)[0], generate(**kw, speculate=3)[0]
    assert spec.hyps == seq.hyps
    assert sum(h.passes for h in spec.hypotheses) <= sum(h.passes for h in seq.hypotheses) == 6 * 8
    tree = generate(**kw, speculate="tree2:1+1")[0]
    assert tree.hyps == seq.hyps
    with pytest.raises(UserError, match="beam search stays sequential"):
        generate(**kw, speculate=2, beam=2)
    with pytest.raises(UserError, match="greedy"):
        generate(**kw, speculate="tree2", sample=True)


def test_bench_speculative_rows_assert_identical_outputs(ckpt):
    from plmgen.benchmarks.decode import speculative_rows
    from plmgen.decoding.translate import load_translator

    path, data, root = ckpt
    tr = load_translator(str(path), "cpu")
    srcs = tr.tokenizer.encode_batch(["der hund sieht die katze", "rot und blau", "das haus"])
    rows = speculative_rows(tr, srcs, "confidence", drafts=("2", "tree2:1+1"), batch=2, repeats=1)
    assert [r["k"] for r in rows] == ["2", "tree2:1+1"]
    assert 1.0 <= rows[0]["tokens_per_pass"] <= 3.0 and 1.0 <= rows[1]["tokens_per_pass"] <= 3.0
    assert all(r["passes"] <= r["tokens"] and r["wall_ratio"] > 0 for r in rows)


def test_window_study_tables_and_resume(ckpt, tmp_path, monkeypatch):
    """experiments/run_window.py: every spec decoded once, the gap table and per-checkpoint table written with
    provenance; a rerun reads the per-decode records instead of decoding again."""
    import importlib.util

    import plmgen.decoding.translate as tr_mod

    spec = importlib.util.spec_from_file_location("run_window", ROOT / "experiments" / "run_window.py")
    rw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rw)
    path, _, _ = ckpt
    kw = dict(checkpoints=str(path), orders="confidence", windows="2", precision="fp32", limit=5, bootstrap=20,
              work=str(tmp_path / "work"), out=str(tmp_path / "out"))
    dest = rw.run_window(**kw)
    text = (dest / "README.md").read_text(encoding="utf-8")
    for row in ("| l2r |", "| confidence@w2 |", "| confidence |"):
        assert text.count(row) == 2, row  # the gap table and the checkpoint's table
    res = json.loads((dest / "results.json").read_text(encoding="utf-8"))
    label = path.resolve().parents[1].name  # <run>/checkpoints/last.ckpt
    assert set(res["rows"][label]) == {"l2r", "confidence@w2", "confidence"}
    assert res["provenance"]["checkpoints"][label]["sha256"] and res["provenance"]["git_commit"]
    (ref_run,) = generate(checkpoint=str(path), split="test", order="confidence@w2", limit=5, quiet=True)
    record = json.loads((tmp_path / "work" / label / "confidence@w2.json").read_text(encoding="utf-8"))
    assert record["hyps"] == ref_run.hyps  # the study decodes as `generate` does

    def no_decoding(*_, **__):
        raise AssertionError("decoded again instead of resuming")

    monkeypatch.setattr(tr_mod, "translate", no_decoding)
    assert (rw.run_window(**kw) / "README.md").read_text(encoding="utf-8") == text


def test_distilled_targets_keep_the_reference_where_the_teacher_loops_or_is_empty():
    from plmgen.data.distill import distilled_targets

    hyps = ["Click OK.", "Click Click OK.", "", "the the end", "Open it."]
    refs = ["Press OK.", "Press OK.", "Done.", "the the end", "Open the file."]
    out, counts = distilled_targets(hyps, refs)
    assert out == ["Click OK.", "Press OK.", "Done.", "the the end", "Open it."]  # a repeat the reference has stays
    assert counts["teacher output"] == 3 and sum(counts.values()) == 5
    assert distilled_targets(hyps, refs, keep_repeats=True)[0][1] == "Click Click OK."


def test_distill_writes_a_folder_with_the_teachers_training_targets(ckpt, tmp_path):
    from plmgen.data.distill import distill
    from plmgen.data.splits import load_manifest, load_pairs, verify_dataset

    path, data, _ = ckpt
    # The tiny teacher loops ("h h h"): keep_repeats keeps its outputs, so they must all be in the folder.
    out = distill(teacher=str(path), data=str(data), out=str(tmp_path / "kd"), precision="fp32", keep_repeats=True)
    train, orig = load_pairs(out, "train"), load_pairs(data, "train")
    (run,) = generate(checkpoint=str(path), split="train", data=str(data), out=str(tmp_path / "hyp.txt"),
                      quiet=True, batch_size=64)
    assert [s for s, _ in train] == [s for s, _ in orig]
    assert [t for _, t in train] == [h if h.strip() else r for h, (_, r) in zip(run.hyps, orig)] != [t for _, t in orig]
    for split in ("dev", "test"):
        assert load_pairs(out, split) == load_pairs(data, split)
    m = load_manifest(out)
    assert verify_dataset(out) is not None and m["recipe"] == "distill" and len(m["sources"][0]["sha256"]) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hyp.txt", "kd"]  # the teacher's work files are gone
    with pytest.raises(UserError, match="--out.*exists"):
        distill(teacher=str(path), data=str(data), out=str(out))
    both = distill(teacher=str(path), data=str(data), out=str(out), keep_repeats=True, with_references=True,
                   precision="fp32", force=True)
    assert load_pairs(both, "train") == orig + train and load_manifest(both)["settings"]["with_references"]
    beamed = distill(teacher=str(path), data=str(data), out=str(tmp_path / "kd2"), beam=2, keep_repeats=True,
                     precision="fp32")
    (run2,) = generate(checkpoint=str(path), split="train", data=str(data), out=str(tmp_path / "hyp.txt"),
                       quiet=True, batch_size=64, beam=2)
    assert [t for _, t in load_pairs(beamed, "train")] == [h if h.strip() else r for h, (_, r) in zip(run2.hyps, orig)]
    assert load_manifest(beamed)["settings"]["decoding"] == "l2r beam 2"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="not a plmgen prepared folder"):
        distill(teacher=str(path), data=str(data), out=str(tmp_path / "notes"), force=True)


@pytest.mark.parametrize("empty_slots", [0, 2])
def test_the_empty_token_is_written_only_by_an_empty_slots_checkpoint_and_dropped_from_the_text(ckpt, empty_slots):
    from plmgen.config import DecodeConfig, TranslateConfig
    from plmgen.decoding.translate import load_translator, translate

    path, _, _ = ckpt
    tr = load_translator(str(path), device="cpu")
    tr.config.objective.seq2seq.empty_slots = empty_slots  # as if fine-tuned with empty slots
    tok = tr.tokenizer
    with torch.no_grad():
        tr.model.lm_bias[tok.empty_id] += 50.0  # the empty token wins wherever it is allowed
    run = translate(tr, tok.encode_batch(["a b c", "d e"]), TranslateConfig(decode=DecodeConfig(order="confidence"),
                                                                           length="4"))
    empties = [list(h.tokens).count(tok.empty_id) for h in run.hypotheses]
    if empty_slots:
        assert empties == [4, 4] and run.hyps == ["", ""]
    else:
        assert empties == [0, 0] and tok.empty_id in tr.banned


def test_draft_coverage_grows_with_the_candidate_set(ckpt, tmp_path, capsys):
    """experiments/draft_coverage.py: each grid row's candidate set contains the previous row's (more positions,
    more tokens per neighbour), so its depth-1 coverage cannot fall; coverages are shares."""
    import importlib.util

    path, data, _ = ckpt
    spec = importlib.util.spec_from_file_location("draft_coverage", ROOT / "experiments" / "draft_coverage.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(str(path), split="dev", limit=4, out=str(tmp_path / "cov.md"), data=str(data))
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    cov1 = [float(r[2]) for r in rows]
    assert len(rows) == len(mod.GRID) and all(0 <= c <= 1 for c in cov1)
    assert cov1 == sorted(cov1) and float(rows[0][4]) == 1.0  # the chain: one candidate per node
    assert all(float(r[3]) <= float(r[2]) for r in rows)  # depth 2 needs depth 1
    import re

    assert int(re.search(r"; (\d+) steps\.", (tmp_path / "cov.md").read_text()).group(1)) > 0


@pytest.mark.parametrize("fp32_agrees", [True, False])
def test_bench_speculative_rows_check_bf16_differences_in_fp32(monkeypatch, fp32_agrees):
    """Under bf16 an output that differs from sequential decoding is re-decoded in fp32, where it must agree
    (rounding near ties); a difference that survives fp32 fails the benchmark."""
    from types import SimpleNamespace

    import plmgen.decoding.translate as translate_mod
    from plmgen.benchmarks.decode import speculative_rows

    def fake(tr, sources, cfg):
        d = cfg.decode
        flip = d.speculate and (d.bf16 or not fp32_agrees)
        hyps = [SimpleNamespace(tokens=[s[0] + (1 if flip and i == 1 else 0)], passes=1) for i, s in enumerate(sources)]
        if len(sources) == 1 and not d.bf16:  # the fp32 re-decode of the one differing source
            hyps = [SimpleNamespace(tokens=[sources[0][0] + (1 if flip else 0)], passes=1)]
        return SimpleNamespace(hypotheses=hyps, tokens=len(hyps))

    monkeypatch.setattr(translate_mod, "translate", fake)
    srcs = [[5], [6], [7]]
    if fp32_agrees:
        rows = speculative_rows(None, srcs, "confidence", drafts=("2",), bf16=True, repeats=1)
        assert rows[0]["bf16_flips"] == 1
    else:
        with pytest.raises(UserError, match="differ from sequential"):
            speculative_rows(None, srcs, "confidence", drafts=("2",), bf16=True, repeats=1)


def test_tree_speculation_table_and_resume(ckpt, tmp_path, monkeypatch):
    """experiments/tree_speculation.py: each spec decoded against sequential greedy (identical), tokens per pass in
    the table; a rerun reads the per-spec records instead of decoding again."""
    import importlib.util

    import plmgen.decoding.translate as tr_mod

    spec = importlib.util.spec_from_file_location("tree_speculation", ROOT / "experiments" / "tree_speculation.py")
    ts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ts)
    path, _, _ = ckpt
    kw = dict(checkpoint=str(path), specs="2,tree2:1+1", limit=4, batch_size=2, precision="fp32", device="cpu",
              out=str(tmp_path / "out"))
    ts.main(**kw)
    text = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    rows = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))["rows"]
    assert [r["k"] for r in rows] == ["2", "tree2:1+1"] and "| `tree2:1+1` |" in text
    assert all(1.0 <= r["tokens_per_pass"] <= 3.0 and r["passes"] <= r["tokens"] for r in rows)

    def no_decoding(*_, **__):
        raise AssertionError("decoded again instead of resuming")

    monkeypatch.setattr(tr_mod, "translate", no_decoding)
    ts.main(**kw)
    assert json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))["rows"] == rows
    with pytest.raises(UserError, match="--speculate"):
        ts.main(**{**kw, "specs": "tree"})


def test_workers_decode_the_grid_as_one_process_does(ckpt, tmp_path):
    """--workers 2 (spawned processes, one thread each): the same hypotheses, traces and table rows as one process,
    for fixed, random (seeded per example), adaptive and sampled orders; runs come back in the grid's order."""
    path, data, root = ckpt
    kw = dict(checkpoint=str(path), split="dev", orders="l2r,random,confidence,parallel@2", lengths="predict,5",
              seed=3, quiet=True, evaluate=True, threads=2)
    one = generate(out=str(tmp_path / "one"), **kw)
    two = generate(out=str(tmp_path / "two"), workers=2, **kw)
    assert [(r.order, r.length) for r in two] == [(r.order, r.length) for r in one]
    assert [r.hyps for r in two] == [r.hyps for r in one]
    for name in ("random.predict", "confidence.5"):
        trace = [(tmp_path / d / f"{name}.trace.jsonl").read_text() for d in ("one", "two")]
        assert trace[0] == trace[1]
    table = [(tmp_path / d / "orders.md").read_text().splitlines() for d in ("one", "two")]
    strip = lambda rows: [r.rsplit("|", 2)[0] for r in rows]  # the last column is tokens/s
    assert strip(table[0]) == strip(table[1])
    sampled = dict(kw, orders="l2r,random", lengths="predict", sample=True, temperature=1.0)
    assert ([r.hyps for r in generate(out=str(tmp_path / "s1"), **sampled)]
            == [r.hyps for r in generate(out=str(tmp_path / "s2"), workers=2, **sampled)])
    with pytest.raises(UserError, match="--workers must be an integer in \[1, inf\]"):
        generate(out=str(tmp_path / "bad"), workers=0, **kw)


def test_beam_suffix_in_a_grid_decodes_as_the_beam_flag(ckpt, tmp_path):
    """``--orders l2r,l2r+beam3`` with ``--beam 2``: the plain entry decodes with the flag's beam, the suffixed one
    with its own (the suffix wins), each labelled by its spec in the table."""
    from plmgen.decoding.generate import _jobs, parse_order_spec
    from plmgen.length import parse_length_mode

    specs = [parse_order_spec(s) for s in ("l2r", "l2r+beam3", "confidence@w2+beam4")]
    jobs = _jobs(specs, ["a", "b", "c"], [parse_length_mode("predict")], 1, 8, beam=2, max_len=24)
    assert [(j[0].decode.order, j[0].decode.beam, j[0].decode.window) for j in jobs] == [
        ("l2r", 2, 0), ("l2r", 3, 0), ("confidence", 4, 2)]
    path, data, root = ckpt
    kw = dict(checkpoint=str(path), split="dev", quiet=True)
    runs = generate(orders="l2r,l2r+beam3", out=str(tmp_path / "grid"), beam=2, **kw)
    assert [r.order for r in runs] == ["l2r", "l2r+beam3"]
    assert runs[1].hyps == generate(order="l2r", beam=3, **kw)[0].hyps
    assert "| l2r+beam3 |" in (tmp_path / "grid" / "orders.md").read_text()


def test_costly_runs_start_first_in_workers():
    """Adaptive orders, beams and length beams are queued before the cheap fixed-order greedy runs."""
    from plmgen.config import DecodeConfig, TranslateConfig
    from plmgen.decoding.workers import cost_rank

    def rank(length_beam=1, **kw):
        return cost_rank(TranslateConfig(decode=DecodeConfig(**kw), length_beam=length_beam))

    assert [rank(order="l2r"), rank(order="r2l"), rank(order="confidence"), rank(order="l2r", beam=4),
            rank(order="l2r", length_beam=3)] == [1, 1, 0, 0, 0]
