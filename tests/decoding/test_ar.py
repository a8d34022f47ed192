"""prefix-lm decoding: the incremental KV cache equals a full recompute (per-step logits and outputs), for greedy,
beam and sampling, padded batches and memory; batching changes nothing; </s> and the length limits stop it."""

from __future__ import annotations

import pytest
import torch

from plmgen.config import DecodeConfig
from plmgen.decoding.ar import Limits, Recompute, decode, default_limits
from plmgen.decoding.cache import build_layout

from .helpers import PAD, SEP, SRC, model

EOS = 2
SPECIALS = list(range(9))  # banned like the tokenizer's special ids (</s> stays allowed)
MODES = [{}, {"beam": 3}, {"sample": True, "seed": 3, "temperature": 1.5}]


def run(m, cfg_kw, src=SRC, limits=None, backend="cache", examples=None, aligned=False):
    steps = []
    cfg = DecodeConfig(backend=backend, **cfg_kw)
    limits = limits or default_limits(src, cap=12)
    hyps = decode(m, src, cfg, limits, sep_id=SEP, pad_id=PAD, eos_id=EOS, banned=SPECIALS, examples=examples,
                  aligned=aligned, on_step=lambda lp, n: steps.append(lp.clone()))
    return hyps, steps


def assert_same(a, b):
    (ha, sa), (hb, sb) = a, b
    assert [h.tokens for h in ha] == [h.tokens for h in hb]
    assert len(sa) == len(sb)
    for la, lb in zip(sa, sb):
        torch.testing.assert_close(la, lb, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor([h.logprob for h in ha]), torch.tensor([h.logprob for h in hb]),
                               atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def m():
    """A random tiny model whose </s> is likely enough that outputs end at different lengths."""
    mm = model()
    with torch.no_grad():
        mm.lm_bias[EOS] += 1.0
    return mm


def test_outputs_end_at_different_lengths(m):
    """The fixture exercises stopping mid-batch (otherwise the equality tests below would test less)."""
    hyps, _ = run(m, {})
    lens = [len(h.tokens) for h in hyps]
    assert len(set(lens)) > 1 and all(1 <= n for n in lens), lens
    assert any(n < lim for n, lim in zip(lens, default_limits(SRC, cap=12).max_len.tolist()))


@pytest.mark.parametrize("kw", MODES, ids=["greedy", "beam3", "sample"])
def test_cache_equals_full_recompute(m, kw):
    assert_same(run(m, kw), run(m, kw, backend="recompute"))


@pytest.mark.parametrize("kw", MODES, ids=["greedy", "beam3", "sample"])
def test_cache_equals_full_recompute_with_aligned_positions(m, kw):
    a = run(m, kw, aligned=True)
    assert_same(a, run(m, kw, backend="recompute", aligned=True))
    assert not torch.allclose(a[1][1], run(m, kw)[1][1])  # the positions are live (the first fed token's step)


def test_aligned_score_is_one_pass_over_the_objectives_batch(m):
    """Greedy aligned decoding's log-probability = one model(...) pass over the prefix-lm objective's own aligned
    training batch (``pair_batch`` + ``prefix_lm_masks`` + ``with_aligned_positions``, an independent layout)."""
    from plmgen.data.parallel import pair_batch
    from plmgen.objectives.prefix_lm import prefix_lm_masks
    from plmgen.objectives.seq2seq import with_aligned_positions

    hyps, _ = run(m, {}, aligned=True)
    batch = with_aligned_positions(pair_batch(SRC, [h.tokens for h in hyps], SEP, PAD))
    pm = prefix_lm_masks(batch["input_ids"], batch["target"], batch["valid"], EOS)
    with torch.no_grad():
        h = m(batch["input_ids"], batch["seg_ids"], pm.content, positions=batch["positions"]).h
        lp = torch.log_softmax(m.logits(h), -1).gather(2, pm.labels[:, :, None])[..., 0]
    ref = (lp * pm.predicts).sum(1)
    torch.testing.assert_close(torch.tensor([x.logprob for x in hyps]), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kw", MODES[:2], ids=["greedy", "beam3"])
def test_cache_equals_recompute_with_memory(kw):
    """Sources longer than max_segment go through Transformer-XL memory in both backends."""
    mm = model(mem_len=6)
    with torch.no_grad():
        mm.lm_bias[EOS] += 1.0
    kw = dict(kw, max_segment=4)
    assert_same(run(mm, kw), run(mm, kw, backend="recompute"))
    assert_same(run(mm, kw, aligned=True), run(mm, kw, backend="recompute", aligned=True))


@pytest.mark.parametrize("kw", MODES, ids=["greedy", "beam3", "sample"])
def test_batched_equals_one_at_a_time(m, kw):
    together, _ = run(m, kw)
    for i, (s, h) in enumerate(zip(SRC, together)):
        alone, _ = run(m, kw, src=[s], examples=[i])  # sampling: each example's own stream (seed, index)
        assert alone[0].tokens == h.tokens
        assert abs(alone[0].logprob - h.logprob) < 1e-4


def test_beam_of_one_is_greedy_and_beam_scores_at_least_greedy(m):
    greedy, _ = run(m, {})
    one, _ = run(m, {"beam": 1})
    assert [h.tokens for h in one] == [h.tokens for h in greedy]
    beam, _ = run(m, {"beam": 4})
    for g, b in zip(greedy, beam):  # the beam keeps the best length-normalised score
        assert b.logprob / (len(b.tokens) + 1) >= g.logprob / (len(g.tokens) + 1) - 1e-5


def chain_rule(m, src, tokens) -> float:
    """log p(tokens </s> | src), teacher-forced through a fresh full-recompute backend."""
    with torch.inference_mode():
        be = Recompute(m, build_layout(m, [src], [1], SEP, PAD, 512), 0)
        lp, total = be.first, 0.0
        for t in tokens + [EOS]:
            total += float(lp[0, t])
            lp = be.step(torch.tensor([t]))
    return total


@pytest.mark.parametrize("kw", MODES, ids=["greedy", "beam3", "sample"])
def test_score_is_the_chain_rule_log_probability(m, kw):
    hyps, _ = run(m, kw)
    for s, h in zip(SRC, hyps):
        assert abs(h.logprob - chain_rule(m, s, h.tokens)) < 1e-4
        assert h.steps == len(h.tokens) + 1 and h.trace == [[i] for i in range(len(h.tokens))]
    if kw.get("beam"):  # the beam really searched: it found something greedy did not
        assert [h.tokens for h in hyps] != [h.tokens for h in run(m, {})[0]]


def test_eos_stops_and_limits_bound_the_output(m):
    mm = model()
    with torch.no_grad():
        mm.lm_bias[EOS] += 100.0  # </s> always wins: every output has the minimum length
    assert [len(h.tokens) for h in run(mm, {})[0]] == [1, 1, 1]
    with torch.no_grad():
        mm.lm_bias[EOS] -= 200.0  # </s> never wins: the length cap stops it
    lim = default_limits(SRC, cap=12)
    assert lim.max_len.tolist() == [min(2 * len(s) + 10, 12) for s in SRC]
    for kw in MODES:
        assert [len(h.tokens) for h in run(mm, kw)[0]] == lim.max_len.tolist()
    fixed = Limits(torch.tensor([3, 1, 5]), torch.tensor([3, 1, 5]))
    assert [len(h.tokens) for h in run(m, {"beam": 2}, limits=fixed)[0]] == [3, 1, 5]


def test_blank_pieces_never_end_the_output(m):
    """``banned_last`` ids are never the last token: no </s> right after one, and none where </s> will be forced."""
    free = [h.tokens for kw in MODES for h in run(m, kw)[0]]
    ends = sorted({t[-1] for t in free})
    fixed = Limits(torch.tensor([3, 1, 5]), torch.tensor([3, 1, 5]))
    for kw in MODES:
        for limits in (None, fixed):
            cfg = DecodeConfig(**kw)
            hyps = decode(m, SRC, cfg, limits or default_limits(SRC, cap=12), sep_id=SEP, pad_id=PAD, eos_id=EOS,
                          banned=SPECIALS, banned_last=ends)
            assert all(h.tokens and h.tokens[-1] not in ends for h in hyps)
            if limits is fixed:
                assert [len(h.tokens) for h in hyps] == [3, 1, 5]


def test_banned_ids_never_appear(m):
    for kw in MODES:
        for h in run(m, kw)[0]:
            assert not set(h.tokens) & set(SPECIALS)
