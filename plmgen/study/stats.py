"""Across seeds and against the baseline: mean ± std of each cell, and sacrebleu's paired significance tests.

The paired tests are sacrebleu's own (``sacrebleu.significance.PairedTest``: paired bootstrap resampling, ``bs``, and
paired approximate randomization, ``ar``), run on the seed-pooled corpus: system i's hypotheses of seeds s1..sn
concatenated, against the baseline's hypotheses of the same seeds, references repeated n times. The resampling
unit is the (seed, sentence) pair, so the test sees test-set variance and, through the pooling, the seeds' spread;
``wins`` (seeds where the row beats the baseline's same-seed BLEU) is printed beside it for the per-seed view.
"""

from __future__ import annotations

import math
import os
from typing import Sequence


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    xs = [float(x) for x in xs]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def pm(xs: Sequence[float], digits: int = 2) -> str:
    """``"12.34 ± 0.56"`` over seeds (``"—"`` when there is nothing)."""
    if not xs:
        return "—"
    m, s = mean_std(xs)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def paired_tests(baseline: Sequence[str], systems: dict[str, Sequence[str]], refs: Sequence[str], bs: int,
                 ar: int) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Paired bootstrap and approximate-randomization p-values of every system against ``baseline`` (BLEU and
    chrF) -> ({system: {"bleu_p_bs", "bleu_p_ar", "chrf_p_bs", "chrf_p_ar"}}, {test: sacrebleu signature})."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    out: dict[str, dict[str, float]] = {name: {} for name in systems}
    sigs: dict[str, str] = {}
    if not systems:
        return out, sigs
    named = [("__baseline__", list(baseline))] + [(n, list(h)) for n, h in systems.items()]
    os.environ.setdefault("SACREBLEU_SEED", "12345")
    for test, n in (("bs", bs), ("ar", ar)):
        if n <= 0:
            continue
        signatures, scores = PairedTest(named, {"BLEU": BLEU(), "chrF": CHRF()}, [list(refs)], test_type=test,
                                        n_samples=n, n_ar_confidence=-1)()
        for metric, key in (("BLEU", "bleu"), ("chrF2", "chrf")):
            for name, result in zip(scores["System"][1:], scores[metric][1:]):
                out[name][f"{key}_p_{test}"] = float(result.p_value)
        sigs[test] = str(signatures["BLEU"])
    return out, sigs


def fmt_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def repetition_sign_test(baseline: Sequence[str], system: Sequence[str]) -> tuple[int, int, float]:
    """Paired test of the repeated-word rate: (sentences that repeat a word only in the baseline, only in the
    system, exact two-sided sign-test p over those discordant sentences; 1.0 when there are none)."""
    from plmgen.evaluation import has_repeat

    if len(baseline) != len(system):
        raise ValueError(f"paired outputs differ in length: {len(baseline)} vs {len(system)}")
    pairs = [(has_repeat(b), has_repeat(s)) for b, s in zip(baseline, system)]
    only_b = sum(b and not s for b, s in pairs)
    only_s = sum(s and not b for b, s in pairs)
    n, k = only_b + only_s, min(only_b, only_s)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return only_b, only_s, p
