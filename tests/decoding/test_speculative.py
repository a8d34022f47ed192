"""Speculative decoding: greedy output equals sequential greedy token for token; sampling has the sequential
sampler's distribution (exact chain-rule probabilities vs a fixed-seed chi-square)."""

from __future__ import annotations

import math

import pytest
import torch

from plmgen.config import DecodeConfig
from plmgen.decoding import ORDERS, decode, sequence_logprob

from .helpers import LENS, PAD, SEP, SRC, model

ORDERS_1 = [o for o in ORDERS if o != "threshold"]


@pytest.fixture(scope="module")
def m():
    return model()


def dec(m, src=SRC, lens=LENS, **kw):
    return decode(m, src, lens, DecodeConfig(**kw), sep_id=SEP, pad_id=PAD)


def assert_same(a, b):
    assert [h.tokens for h in a] == [h.tokens for h in b]
    assert [h.trace for h in a] == [h.trace for h in b]
    torch.testing.assert_close(torch.tensor([h.logprob for h in a]), torch.tensor([h.logprob for h in b]),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("order", ORDERS_1)
@pytest.mark.parametrize("k", [1, 3])
def test_greedy_speculative_equals_sequential(m, order, k):
    seq = dec(m, order=order, seed=2)
    spec = dec(m, order=order, seed=2, speculate=k)
    assert_same(spec, seq)
    assert all(1 <= h.passes <= h.steps for h in spec)  # every pass yields at least one token


@pytest.mark.parametrize("order", ["confidence", "entropy", "margin"])
@pytest.mark.parametrize("window", [1, 2, 4])
def test_greedy_speculative_equals_sequential_in_a_window(m, order, window):
    """Each level's window is the W leftmost slots still open once the drafts before it are filled."""
    seq = dec(m, order=order, window=window)
    assert_same(dec(m, order=order, window=window, speculate=3), seq)


@pytest.mark.parametrize("order", ["l2r", "confidence"])
def test_speculative_on_the_recompute_backend(m, order):
    """The verify pass's level masks mean the same thing in the naive full recompute."""
    assert_same(dec(m, order=order, speculate=2, backend="recompute"), dec(m, order=order))


@pytest.mark.parametrize("order", ["l2r", "margin"])
def test_speculative_long_sources_through_memory(order):
    mm = model(mem_len=8)
    src = [[7, 8, 9], [20 + i for i in range(11)], [30 + i for i in range(6)]]
    kw = dict(src=src, order=order, max_segment=4)
    assert_same(dec(mm, **kw, speculate=3), dec(mm, **kw))


def test_drafts_are_accepted_when_the_verifier_agrees():
    """With the attention outputs zeroed every query row predicts the same token, so all drafts are accepted:
    k + 1 tokens per pass after the first."""
    mm = model()
    with torch.no_grad():
        for name, p in mm.named_parameters():
            if name.endswith("rel_attn.o.weight"):
                p.zero_()
    seq = dec(mm, src=[SRC[0]], lens=[9], order="l2r")
    spec = dec(mm, src=[SRC[0]], lens=[9], order="l2r", speculate=3)
    assert_same(spec, seq)
    assert spec[0].steps == 9 and spec[0].passes == 3  # 1, then 4 (c + 3 drafts), then 4


def test_speculate_rejects_beam_and_parallel_fills():
    from plmgen.errors import UserError

    with pytest.raises(UserError, match="beam search stays sequential"):
        DecodeConfig(beam=2, speculate=2)
    with pytest.raises(UserError, match="k_per_step 1"):
        DecodeConfig(order="confidence", k_per_step=2, speculate=2)


@pytest.mark.parametrize("order", ["l2r", "confidence"])
def test_sampling_is_lossless(order):
    """Tiny vocabulary (6 tokens), target length 3: the sequential sampler's exact output distribution is the
    chain-rule probability under the order (``sequence_logprob``); 6000 speculative samples must fit it (chi-square, fixed
    seed). A sampler that accepted every draft fails it (statistic 471 against a critical value of 230)."""
    from scipy.stats import chi2

    V, sep, pad, L = 6, 4, 5, 3  # nothing banned: every id is an outcome
    mm = model(vocab=V)  # 4.8 nats of output entropy (uniform: 5.4), tokens strongly dependent on each other
    src = [1, 2, 3]
    outcomes = [[a, b, c] for a in range(6) for b in range(6) for c in range(6)]
    exact = torch.tensor([h.logprob for h in sequence_logprob(mm, [src] * len(outcomes), outcomes, order, sep_id=sep,
                                                  pad_id=pad)]).exp()
    assert abs(float(exact.sum()) - 1) < 1e-4
    N = 6000
    cfg = DecodeConfig(order=order, sample=True, seed=3, speculate=2)
    hyps = decode(mm, [src] * N, [L] * N, cfg, sep_id=sep, pad_id=pad)
    counts = torch.zeros(len(outcomes))
    for h in hyps:
        a, b, c = h.tokens
        counts[a * 36 + b * 6 + c] += 1
    expected = exact * N
    big = expected >= 5
    stat = float((((counts - expected) ** 2 / expected)[big]).sum())
    rest_e, rest_c = float(expected[~big].sum()), float(counts[~big].sum())
    if rest_e > 0:
        stat += (rest_c - rest_e) ** 2 / rest_e
    dof = int(big.sum()) + (1 if rest_e > 0 else 0) - 1
    assert stat < chi2.ppf(0.999, dof), (stat, dof)
    assert sum(h.passes for h in hyps) < sum(h.steps for h in hyps)  # drafts were accepted along the way


@pytest.mark.parametrize("order", ["confidence", "entropy", "margin", "confidence@w2"])
def test_empty_slots_last_speculative_equals_sequential(m, order):
    """With an empty token that the random model often writes, the adaptive orders decide its slots last (the
    traces change); chain and tree speculation rank slots by the same score, so their output is the sequential
    one; ``empty_last=False`` gives the plain order's output."""
    from collections import Counter

    name, _, w = order.partition("@w")
    base = dict(order=name, window=int(w or 0))
    plain = dec(m, **base)

    def run(**kw):
        return decode(m, SRC, LENS, DecodeConfig(**base, **kw), sep_id=SEP, pad_id=PAD, empty_id=empty)

    for empty, _ in Counter(t for h in plain for t in h.tokens).most_common(3):  # the first that the rule moves
        seq = run()
        if [h.trace for h in seq] != [h.trace for h in plain]:
            break
    assert [h.trace for h in seq] != [h.trace for h in plain]
    assert_same(run(speculate=3), seq)
    assert_same(run(speculate=2, draft="tree"), seq)
    assert_same(run(empty_last=False), plain)
