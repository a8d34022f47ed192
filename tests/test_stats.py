"""plmgen.study.stats: the paired repetition test against brute-force enumeration."""

import itertools

import pytest

from plmgen.study.stats import repetition_sign_test


def _enumerated_p(a: int, b: int) -> float:
    """Two-sided: the share of all 2^n equally likely sign patterns at least as far from n/2 as (a, b)."""
    n = a + b
    far = abs(a - n / 2)
    pats = list(itertools.product((0, 1), repeat=n))
    return sum(abs(sum(p) - n / 2) >= far for p in pats) / len(pats) if n else 1.0


@pytest.mark.parametrize("a,b", [(0, 0), (3, 0), (0, 5), (4, 4), (7, 2), (1, 9), (6, 5)])
def test_repetition_sign_test_counts_discordant_sentences_and_matches_enumeration(a, b):
    rep, clean, both = "click click here", "click here", "ok ok"
    base = [rep] * a + [clean] * b + [both, clean]
    new = [clean] * a + [rep] * b + [both, clean]
    only_b, only_s, p = repetition_sign_test(base, new)
    assert (only_b, only_s) == (a, b)
    assert p == pytest.approx(_enumerated_p(a, b))


def test_repetition_sign_test_needs_paired_outputs():
    with pytest.raises(ValueError, match="paired outputs differ in length"):
        repetition_sign_test(["a"], ["a", "b"])
