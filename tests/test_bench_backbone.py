"""Smoke test of ``bench backbone`` on a tiny config: it runs end to end and prints the three tracked ratios."""

from __future__ import annotations

import math
import re

import pytest

from plmgen.benchmarks.backbone import run
from plmgen.errors import UserError

pytest.importorskip("transformers")


def test_prints_three_finite_positive_ratios(capsys):
    # vocab 5000: the embedding gradient (640 KB) makes each side's peak-memory delta measurably > 0.
    ratios = run(steps=1, warmup=0, batch=2, seq_len=12, mem_len=4, num_predict=3, d_model=32, n_layer=2,
                 n_head=2, d_inner=48, vocab_size=5000, memory_steps=1)
    out = capsys.readouterr().out
    assert "vocab 5000" in out and "plmgen" in out and "HF" in out
    hf_vs_plm = float(re.search(r"^HF executes (\S+)x plmgen's FLOPs", out, re.M).group(1))
    assert hf_vs_plm > 1, "HF's query stream attends from all T positions, plmgen's from the P targets only"
    for name in ("fp32_train_tokens_per_s_vs_hf", "bf16_train_tokens_per_s_vs_hf", "peak_memory_vs_hf"):
        m = re.search(rf"^ratio {name}: (\S+)$", out, re.M)
        assert m, f"missing ratio line {name!r} in:\n{out}"
        value = float(m.group(1))
        assert math.isfinite(value) and value > 0
        assert value == pytest.approx(ratios[name], rel=1e-2, abs=1e-3)


def test_bad_flags_are_user_errors():
    with pytest.raises(UserError, match="--steps"):
        run(steps=0)
    with pytest.raises(UserError, match="--num_predict"):
        run(seq_len=8, num_predict=9)
