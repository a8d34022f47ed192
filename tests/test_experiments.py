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


def _experiment(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_repeat_origins_classifies_which_copy_came_later_and_its_neighbours():
    ro = _experiment("repeat_origins")
    pieces = {1: "\u2581color", 2: "\u2581two", 3: "\u2581c", 5: "\u2581Mat", 6: "urity", 9: "<e>"}
    piece, skip = pieces.__getitem__, {9}
    # "two color color c": the left "color" (slot 1) written last, between two filled slots
    assert ro.repeat_origin([2, 1, 1, 3], [[0], [2], [3], [1]], piece, skip) == ("left copy later", "both", "adjacent")
    # left to right: the right copy is the later one, with only its left neighbour filled
    assert ro.repeat_origin([2, 1, 1, 3], [[0], [1], [2], [3]], piece, skip) == ("right copy later", "left", "adjacent")
    # across an empty slot; the target's start counts as a filled neighbour
    assert ro.repeat_origin([1, 9, 1], [[2], [0], [1]], piece, skip) == ("left copy later", "left", "across empty")
    # words of two pieces ("Maturity Maturity"): a copy is filled when its first piece is
    assert ro.repeat_origin([5, 6, 5, 6], [[2], [3], [0], [1]], piece, skip) == ("left copy later", "left", "adjacent")
    assert ro.repeat_origin([2, 1, 3], [[0], [1], [2]], piece, skip) is None
    # several fills in one step are ranked in order: the second sees the first
    assert ro.neighbour_kinds([[1, 0], [2]], 3) == {1: "none", 0: "both", 2: "both"}
    assert ro.neighbour_kinds([[2], [0], [1]], 4) == {2: "none", 0: "left", 1: "both"}


def test_repeat_origins_table_reports_shares_of_repeaters_and_of_all_fills():
    from collections import Counter

    ro = _experiment("repeat_origins")
    fills = Counter({"both": 1, "left": 6, "right": 2, "none": 1})
    reps = Counter({("left copy later", "both", "adjacent"): 3, ("right copy later", "left", "across empty"): 1})
    lines = ro.origins_table({"confidence": (fills, reps, 50, 4)})
    assert lines[2] == ("| confidence | 4 of 50 | 75 % | 75 % (10 %) | 25 % (60 %) / 0 % (20 %) / 0 % (10 %) "
                        "| 25 % |")
    assert ro.precision_table({"l2r": ([60.94, 36.3, 23.5, 15.7], 0.9521, 28.626, 3.189)})[2] == (
        "| l2r | 28.63 | 60.9 / 36.3 / 23.5 / 15.7 | 0.952 | 3.19 |")


def test_repeat_origins_leave_one_out_sees_every_target_token_but_the_probed_one():
    """The probed slot's own token must not reach its prediction (no leak through any content state); any other
    target token must (it is context). Checked by changing one token at a time on a random tiny model."""
    import torch

    from plmgen.decoding.cache import build_layout
    from tests.decoding.helpers import PAD, SEP, model

    ro = _experiment("repeat_origins")
    m = model()
    layout = build_layout(m, [[7, 8, 9], [10, 11, 12, 13]], [4, 4], SEP, PAD, 512)
    tokens = torch.tensor([[20, 21, 22, 23], [24, 25, 26, 27]])
    slots = torch.tensor([1, 2])
    with torch.no_grad():
        base = ro.leave_one_out(m, layout, tokens, slots)
        own = tokens.clone()
        own[0, 1], own[1, 2] = 30, 31
        assert torch.allclose(ro.leave_one_out(m, layout, own, slots), base, atol=1e-6)
        for row, other in ((0, 3), (1, 0)):
            changed = tokens.clone()
            changed[row, other] = 33
            out = ro.leave_one_out(m, layout, changed, slots)
            assert not torch.allclose(out[row], base[row], atol=1e-4)
            assert torch.allclose(out[1 - row], base[1 - row], atol=1e-6)


def test_repeat_origins_copies_and_leave_one_out_table():
    ro = _experiment("repeat_origins")
    piece = {1: "\u2581color", 2: "\u2581two"}.__getitem__
    assert ro.repeat_copies([2, 1, 1], [[2], [0], [1]], piece, set()) == (1, 2, True)  # left copy filled last
    assert ro.repeat_copies([2, 1, 2], [[0], [1], [2]], piece, set()) is None
    lines = ro.loo_table({"confidence": (88, {"later copy": 28.4, "earlier copy": 65.0, "a random slot": 24.2})})
    assert lines[-1] == "| confidence | 88 | 28 % | 65 % | 24 % |"
