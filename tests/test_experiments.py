"""The study scripts in experiments/: configs and overrides stay valid as the typed configs evolve (the study
specs themselves: tests/test_study.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plmgen.config import ExperimentConfig
from plmgen.study.spec import override

ROOT = Path(__file__).resolve().parents[1]


def test_override_changes_only_the_named_keys():
    base = ExperimentConfig.from_yaml(ROOT / "experiments" / "configs" / "demo-pretrain.yaml")
    cfg = override(base, {"model.mem_len": 0, "objective.seq2seq.order": "l2r"})
    assert cfg.model.mem_len == 0 and cfg.objective.seq2seq.order == "l2r"
    assert cfg.data.reuse_len == base.data.reuse_len == 32  # "memory off" keeps the data layout
    assert cfg.model.d_model == base.model.d_model


def test_override_rejects_unknown_keys_and_bad_values():
    base = ExperimentConfig.from_yaml(ROOT / "experiments" / "configs" / "demo-pretrain.yaml")
    with pytest.raises(KeyError, match="model.memlen"):
        override(base, {"model.memlen": 0})
    with pytest.raises(ValueError, match="objective"):
        override(base, {"objective.name": "no-such-objective"})


def test_compare_records_prints_paired_bleu_and_repetition_tests(tmp_path, capsys):
    import json
    import subprocess
    import sys

    from plmgen.study.stats import repetition_sign_test

    root = Path(__file__).resolve().parents[1]
    refs = [f"the cat {i} sat on the mat" for i in range(30)]
    base = [f"the the cat {i} sat on a mat" for i in range(30)]
    new = [f"the cat {i} sat on the mat" for i in range(30)]
    (tmp_path / "refs.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")
    for name, hyps in (("base", base), ("new", new)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "l2r.json").write_text(json.dumps({"hyps": hyps}), encoding="utf-8")
    cmd = [sys.executable, str(root / "experiments" / "compare_records.py"), "--base", str(tmp_path / "base"),
           "--new", str(tmp_path / "new"), "--refs", str(tmp_path / "refs.txt"), "--specs", "l2r", "--bootstrap", "50"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    row = [line for line in out.splitlines() if line.startswith("| l2r")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert "→ 100.00 (+" in cells[1] and cells[4] == "100.00 → 0.00"  # new = refs; every base output repeats
    assert float(cells[5]) == pytest.approx(repetition_sign_test(base, new)[2], rel=0.05) and float(cells[5]) < 1e-6
    bad = subprocess.run(cmd[:-4] + ["--specs", "confidence"], capture_output=True, text=True)
    assert bad.returncode != 0 and "confidence.json: no such record" in bad.stderr
    assert "Traceback" not in bad.stderr
