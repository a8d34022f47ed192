"""Search modes: greedy, beam (vs greedy and brute force), sampling, scoring, refinement, bad input."""

from __future__ import annotations

import itertools

import pytest

import torch

from plmgen.config import DecodeConfig
from plmgen.decoding import ORDERS, decode, get_order, sequence_logprob
from plmgen.decoding.cache import build_layout
from plmgen.decoding.search import _beam
from plmgen.decoding.state import Bans
from plmgen.errors import UserError

from .helpers import LENS, PAD, SEP, SRC, model


@pytest.fixture(scope="module")
def m():
    return model()


def dec(m, src=SRC, lens=LENS, **kw):
    return decode(m, src, lens, DecodeConfig(**kw), sep_id=SEP, pad_id=PAD)


@pytest.mark.parametrize("order", [o for o in ORDERS if o != "threshold"])
def test_beam1_equals_greedy(m, order):
    """The beam-search loop itself (not the greedy loop decode() would pick) with one beam = greedy."""
    cfg = DecodeConfig(order=order, seed=5)
    greedy = dec(m, order=order, seed=5)
    with torch.inference_mode():
        layout = build_layout(m, SRC, LENS, SEP, PAD, cfg.max_segment)
        beam = _beam(m, layout, get_order(order, seed=5), cfg, Bans(), None, None, range(len(SRC)))
    for g, b in zip(greedy, beam):
        assert g.tokens == b.tokens and g.trace == b.trace
        assert abs(g.logprob - b.logprob) < 1e-4


@pytest.mark.parametrize("order", ["l2r", "random", "confidence", "entropy"])
def test_greedy_logprob_is_the_chain_rule_score(m, order):
    hyps = dec(m, order=order, seed=2)
    scored = sequence_logprob(m, SRC, [h.tokens for h in hyps], order, sep_id=SEP, pad_id=PAD, seed=2)
    for h, s in zip(hyps, scored):
        assert abs(h.logprob - s.logprob) < 1e-4 and h.trace == s.trace


def test_beam_finds_brute_force_argmax():
    m = model(vocab=5)
    src, pad = [[0, 1, 2], [3]], 3  # pad id inside the 5-token vocabulary
    for order in ("l2r", "balanced-tree"):
        hyps = decode(m, src, [3, 3], DecodeConfig(order=order, beam=125), sep_id=SEP, pad_id=pad)
        cands = [list(t) for t in itertools.product(range(5), repeat=3)]
        for b, s in enumerate(src):
            scores = [h.logprob for h in sequence_logprob(m, [s] * len(cands), cands, order, sep_id=SEP, pad_id=pad)]
            best = max(range(len(cands)), key=scores.__getitem__)
            assert hyps[b].tokens == cands[best]
            assert abs(hyps[b].logprob - scores[best]) < 1e-4
        greedy = decode(m, src, [3, 3], DecodeConfig(order=order), sep_id=SEP, pad_id=pad)
        assert all(h.logprob >= g.logprob - 1e-4 for h, g in zip(hyps, greedy))


def test_sampling_seeded_and_temperature_limit(m):
    a = dec(m, sample=True, temperature=2.0, seed=1, order="random")
    b = dec(m, sample=True, temperature=2.0, seed=1, order="random")
    c = dec(m, sample=True, temperature=2.0, seed=7, order="random")
    assert [h.tokens for h in a] == [h.tokens for h in b]
    assert [h.tokens for h in a] != [h.tokens for h in c]
    greedy = [h.tokens for h in dec(m, order="confidence")]
    assert [h.tokens for h in dec(m, order="confidence", sample=True, temperature=1e-4, seed=3)] == greedy
    assert [h.tokens for h in dec(m, order="confidence", sample=True, temperature=0.0)] == greedy
    assert [h.tokens for h in dec(m, order="confidence", sample=True, top_k=1, seed=3)] == greedy
    assert [h.tokens for h in dec(m, order="confidence", sample=True, top_p=1e-6, seed=3)] == greedy


@pytest.mark.parametrize("order", ["l2r", "confidence"])
def test_banned_ids_never_generated(m, order):
    """Bans change what is chosen, not the scores: a banned decode's log-probability is still the model's
    chain-rule score of its output (the greedy loop bans in place, the forced scoring on a copy)."""
    greedy = dec(m, order=order)
    banned = sorted({t for h in greedy for t in h.tokens})
    hyps = decode(m, SRC, LENS, DecodeConfig(order=order), sep_id=SEP, pad_id=PAD, banned=banned)
    assert not {t for h in hyps for t in h.tokens} & set(banned)
    scored = decode(m, SRC, LENS, DecodeConfig(order=order), sep_id=SEP, pad_id=PAD, banned=banned,
                    force=[h.tokens for h in hyps])  # the output re-scored, positions chosen under the same bans
    for h, s in zip(hyps, scored):
        assert h.trace == s.trace
        assert h.logprob == pytest.approx(s.logprob, abs=1e-4)


@pytest.mark.parametrize("kw", [{"order": "l2r"}, {"order": "confidence"}, {"order": "r2l", "beam": 3},
                                {"order": "parallel", "k_per_step": 2}, {"order": "l2r", "refine_iters": 2},
                                {"order": "confidence", "speculate": 2}])
def test_blank_pieces_never_fill_the_last_slot(m, kw):
    """``banned_last`` ids (the tokenizer's whitespace-only pieces) never end a target, whatever the order; the
    ban takes only the last slot: an l2r decode keeps every earlier token."""
    free = dec(m, **kw)
    ends = sorted({h.tokens[-1] for h in free})  # what the model puts last when nothing stops it
    hyps = decode(m, SRC, LENS, DecodeConfig(**kw), sep_id=SEP, pad_id=PAD, banned_last=ends)
    assert all(h.tokens[-1] not in ends for h in hyps)
    if kw == {"order": "l2r"}:
        assert [h.tokens[:-1] for h in hyps] == [h.tokens[:-1] for h in free]
    if kw.get("speculate"):  # speculative decoding applies the same rule as the sequential decoder
        seq = decode(m, SRC, LENS, DecodeConfig(order=kw["order"]), sep_id=SEP, pad_id=PAD, banned_last=ends)
        assert [h.tokens for h in hyps] == [h.tokens for h in seq]


def test_refinement_reopens_the_schedule(m):
    base = dec(m, order="l2r")
    ref = dec(m, order="l2r", refine_iters=2)
    for h0, h, n in zip(base, ref, LENS):
        extra = h.trace[len(h0.trace):]
        want = [n * 2 // 3, n * 1 // 3]  # n = N·(T−t)/T, T = 3
        assert [len(s) for s in extra] == [w for w in want if w]
        reopened = {p for s in extra for p in s}
        assert all(h.tokens[p] == h0.tokens[p] for p in range(n) if p not in reopened)
        # the first re-opened set is the lowest-confidence positions of the initial fill
        low = sorted(range(n), key=lambda p: h0.token_logprobs[p])[: want[0]]
        assert sorted(extra[0]) == sorted(low) if want[0] else True


@pytest.mark.parametrize("src,lens,msg", [([[7, 8]], [0], "target length"), ([[]], [3], "empty"),
                                           ([], [], "empty"), ([[7]], [3, 4], "target lengths"),
                                           ([[7]], [300], "max_len"), ([[999]], [2], "source token")])
def test_bad_inputs(m, src, lens, msg):
    with pytest.raises(UserError, match=msg):
        dec(m, src=src, lens=lens)


def test_bad_config():
    for kw in ({"beam": 0}, {"beam": 2, "sample": True}, {"beam": 2, "k_per_step": 2}, {"top_p": 0.0},
               {"temperature": -1.0}, {"backend": "gpu"}):
        with pytest.raises(UserError):
            DecodeConfig(**kw)


def test_row_state_flags_a_position_filled_twice():
    """The state never waits for the device while decoding, but a position filled twice (a decoding bug, which
    could keep a loop from ending) still raises: when the hypotheses are read, and after at most L fills."""
    from plmgen.decoding.state import RowState

    st = RowState.new(torch.tensor([3, 2]), pad_id=0)
    pos, ok = torch.tensor([[0], [1]]), torch.tensor([[True], [True]])
    st.fill(pos, torch.tensor([[5], [6]]), torch.tensor([[-1.0], [-2.0]]), ok)
    assert [h.tokens for h in st.hypotheses([3, 2])] == [[5, 0, 0], [0, 6]]
    st.fill(torch.tensor([[2], [1]]), torch.tensor([[7], [8]]), torch.tensor([[float("-inf")], [-1.0]]), ok)
    with pytest.raises(RuntimeError, match="filled twice"):
        st.fill(torch.tensor([[1], [0]]), torch.tensor([[9], [9]]), torch.zeros(2, 1), ok)  # the third of L = 3
    st = RowState.new(torch.tensor([2]), pad_id=0)  # a −inf log-prob beside a fill does not leak into it
    st.fill(torch.tensor([[0, 1]]), torch.tensor([[3, 4]]), torch.tensor([[-1.0, float("-inf")]]),
            torch.tensor([[True, False]]))
    h = st.hypotheses([2])[0]
    assert (h.tokens, h.token_logprobs, h.logprob, h.trace) == ([3, 0], [-1.0, 0.0], -1.0, [[0]])
    st = RowState.new(torch.tensor([4]), pad_id=0)
    st.fill(torch.tensor([[1, 1]]), torch.tensor([[3, 4]]), torch.zeros(1, 2), torch.tensor([[True, True]]))
    with pytest.raises(RuntimeError, match="filled twice"):
        st.hypotheses([4])
