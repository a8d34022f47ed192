"""sacrebleu wrappers, the evaluate command and markdown tables."""

import pytest

from plmgen.errors import UserError
from plmgen.evaluation import corpus_scores, evaluate, markdown_table

REFS = ["Select the area containing all the ranges.", "Then choose Sheet - Named Ranges.", "This opens the dialog."]


def test_references_against_themselves_score_100():
    s = corpus_scores(REFS, REFS)
    assert s.bleu == pytest.approx(100.0)
    assert s.chrf == pytest.approx(100.0)
    assert "tok:13a" in s.bleu_signature and "version:" in s.bleu_signature
    assert s.chrf_signature.startswith("nrefs:1")


def test_worse_hypotheses_score_lower():
    hyps = ["Select the area containing the ranges.", "Then choose Sheet.", "It opens a window."]
    s = corpus_scores(hyps, REFS)
    assert 0.0 < s.bleu < 100.0 and 0.0 < s.chrf < 100.0


def test_evaluate_prints_scores_with_signatures(tmp_path, capsys):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("\n".join(REFS) + "\n", encoding="utf-8")
    ref.write_text("\n".join(REFS) + "\n", encoding="utf-8")
    s = evaluate(hyp=str(hyp), ref=str(ref))
    out = capsys.readouterr().out
    assert s.bleu == pytest.approx(100.0)
    assert "BLEU = 100.00" in out and "signature: nrefs:1|case:mixed" in out and "chrF = 100.00" in out


def test_evaluate_line_count_mismatch_names_both_files(tmp_path):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("a\nb\n", encoding="utf-8")
    ref.write_text("a\nb\nc\n", encoding="utf-8")
    with pytest.raises(UserError) as e:
        evaluate(hyp=str(hyp), ref=str(ref))
    msg = str(e.value)
    assert str(hyp) in msg and str(ref) in msg and "2" in msg and "3" in msg and "\n" not in msg


def test_evaluate_missing_file_is_user_error(tmp_path):
    ref = tmp_path / "ref.txt"
    ref.write_text("a\n", encoding="utf-8")
    with pytest.raises(UserError, match="nope.txt"):
        evaluate(hyp=str(tmp_path / "nope.txt"), ref=str(ref))


def test_evaluate_cli_exit_code(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("a\n", encoding="utf-8")
    ref.write_text("a\nb\n", encoding="utf-8")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "cli.py"), "evaluate", "--hyp", str(hyp), "--ref", str(ref)],
                       capture_output=True, text=True, cwd=root)
    assert r.returncode == 2
    assert r.stderr.startswith("error: line counts differ") and "Traceback" not in r.stderr


def test_markdown_table_layout():
    t = markdown_table([{"order": "l2r", "BLEU": 12.345}, {"order": "r2l", "BLEU": float("nan")}])
    lines = t.strip().split("\n")
    assert lines[0] == "| order | BLEU |" and lines[1] == "|---|---|"
    assert lines[2] == "| l2r | 12.35 |" and lines[3] == "| r2l | nan |"


def test_repetition_and_unknown_rates():
    from plmgen.evaluation import has_repeat, repetition_rate, unk_rate

    assert has_repeat("Click Click OK") and has_repeat("the. The.") and not has_repeat("Click OK Click")
    assert repetition_rate(["Click Click", "a b", "c d", "x x x"]) == pytest.approx(50.0)
    assert unk_rate(["a \u2047 b", "c"]) == pytest.approx(50.0)
    s = corpus_scores(["Select Select the area.", "Then choose Sheet - Named Ranges.", "This \u2047 opens."], REFS)
    assert s.repetition == pytest.approx(100 / 3) and s.unk == pytest.approx(100 / 3)
    assert "repeated word in 33.3%" in s.lines()[-1]
    assert corpus_scores(REFS, REFS).repetition == 0.0
