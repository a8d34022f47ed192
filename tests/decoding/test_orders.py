"""Order strategies: plans, adaptive choices, parallel fills, and the registry."""

from __future__ import annotations

import math

import pytest
import torch

from plmgen.config import DecodeConfig
from plmgen.decoding import ORDERS, decode, get_order
from plmgen.errors import UserError

from .helpers import PAD, SEP, model


def plan(name, n, seed=0):
    return get_order(name, seed=seed).init([n], n, "cpu")[0].tolist()


def test_fixed_plans():
    assert plan("l2r", 4) == [0, 1, 2, 3]
    assert plan("r2l", 4) == [3, 2, 1, 0]
    assert plan("middle-out", 5) == [2, 3, 1, 4, 0]
    assert plan("balanced-tree", 7) == [3, 1, 5, 0, 2, 4, 6]
    assert plan("balanced-tree", 4) == [1, 2, 0, 3]  # [2,4) is the largest open interval after splitting at 1
    assert plan("random", 9, seed=1) == plan("random", 9, seed=1)
    assert plan("random", 9, seed=1) != plan("random", 9, seed=2)
    assert sorted(plan("random", 9)) == list(range(9))


def synthetic():
    """Three open positions with known confidence / entropy / margin rankings."""
    p = torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.6, 0.1, 0.1, 0.2], [0.55, 0.45, 0.0, 0.0]]])
    return p.clamp(min=1e-9).log(), torch.ones(1, 3, dtype=torch.bool)


@pytest.mark.parametrize("name,first", [("confidence", 1), ("entropy", 2), ("margin", 1)])
def test_adaptive_choice(name, first):
    # confidence: max-prob 0.6 at 1; entropy: 0.55/0.45 (0.688) is lowest vs 0.5/0.5 (ln 2 = 0.693) and 1.09;
    # margin: 0.6-0.2 = 0.4 beats 0.1 and 0.
    logp, ok = synthetic()
    sel, sel_ok = get_order(name).choose(logp, ok)
    assert sel[0][sel_ok[0]].tolist() == [first]


def test_parallel_and_threshold_choice():
    logp, ok = synthetic()
    sel, sel_ok = get_order("parallel", k=2).choose(logp, ok)
    assert sel[0][sel_ok[0]].tolist() == [1, 2]  # by confidence 0.6, 0.55
    sel, sel_ok = get_order("threshold", threshold=0.52).choose(logp, ok)
    assert sel[0][sel_ok[0]].tolist() == [1, 2]
    sel, sel_ok = get_order("threshold", threshold=0.99).choose(logp, ok)
    assert sel[0][sel_ok[0]].tolist() == [1]  # at least one
    ok[0, 1] = False  # a closed position is never chosen
    sel, sel_ok = get_order("confidence").choose(logp, ok)
    assert sel[0][sel_ok[0]].tolist() == [2]


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("k", [1, 3])
def test_every_position_filled_exactly_once(order, k):
    m = model()
    lens = [1, 5, 8]
    hyps = decode(m, [[7, 8], [9], [10, 11, 12]], lens, DecodeConfig(order=order, k_per_step=k, seed=4),
                  sep_id=SEP, pad_id=PAD)
    for h, n in zip(hyps, lens):
        flat = [p for step in h.trace for p in step]
        assert sorted(flat) == list(range(n))
        assert h.steps == len(h.trace) and all(1 <= len(s) <= max(k, n if order == "threshold" else k) for s in h.trace)
        if order != "threshold":
            assert h.steps == -(-n // k)  # ceil(n / k)
        assert len(h.tokens) == n


def test_unknown_order_lists_choices():
    with pytest.raises(UserError, match="l2r.*balanced-tree"):
        get_order("sideways")
    with pytest.raises(UserError, match="order"):
        DecodeConfig(order="sideways")
    with pytest.raises(UserError, match="threshold"):
        DecodeConfig(order="l2r", threshold=0.5)


@pytest.mark.parametrize("order", ["confidence", "entropy", "parallel"])
@pytest.mark.parametrize("window", [1, 2, 3])
def test_window_fills_only_among_the_leftmost_open_positions(order, window):
    """Replaying the trace: every position filled at a step is among the W leftmost still open before it."""
    m = model()
    lens = [1, 5, 8]
    k = 2 if order == "parallel" else 1
    hyps = decode(m, [[7, 8], [9], [10, 11, 12]], lens,
                  DecodeConfig(order=order, k_per_step=k, window=window, seed=4), sep_id=SEP, pad_id=PAD)
    for h, n in zip(hyps, lens):
        still_open = list(range(n))
        for step in h.trace:
            assert set(step) <= set(still_open[:window]), (h.trace, window)
            still_open = [p for p in still_open if p not in step]
        assert not still_open


def _decoder():
    """(tokens, trace) per example of a tiny model's decode of three fixed sources, for any DecodeConfig fields."""
    m = model()
    src, lens = [[7, 8], [9], [10, 11, 12]], [3, 6, 8]
    return lambda **kw: [(h.tokens, h.trace) for h in decode(m, src, lens, DecodeConfig(**kw), sep_id=SEP, pad_id=PAD)]


def test_window_one_is_left_to_right_and_a_wide_window_is_the_plain_order():
    run = _decoder()

    assert run(order="confidence", window=1) == run(order="l2r")
    assert run(order="entropy", window=8) == run(order="entropy")
    assert run(order="entropy", window=2) != run(order="entropy")  # the window changes this tiny model's choices


def test_order_spec_beam_suffix():
    from plmgen.decoding.generate import parse_order_spec

    assert parse_order_spec("l2r+beam4") == {"order": "l2r", "beam": 4}
    assert parse_order_spec("confidence@w2+beam2") == {"order": "confidence", "window": 2, "beam": 2}
    assert parse_order_spec(" entropy ") == {"order": "entropy"}
    for bad in ("l2r+beam0", "l2r+beam", "l2r+beamx", "l2r+b4", "l2r+", "l2r+beam65"):
        with pytest.raises(UserError, match=r"NAME\+beamB"):
            parse_order_spec(bad, "--orders")
    for bad in ("parallel@2+beam4", "confidence@0.5+beam2", "threshold+beam2"):
        with pytest.raises(UserError, match="one position per step"):
            parse_order_spec(bad, "--orders")
    with pytest.raises(UserError, match="unknown order 'beam4'"):
        parse_order_spec("beam4")
    with pytest.raises(UserError, match="'l2r@wx\\+beam2': a window"):
        parse_order_spec("l2r@wx+beam2")


def test_window_needs_an_adaptive_order():
    from plmgen.decoding.generate import parse_order_spec

    assert parse_order_spec("entropy@w3") == {"order": "entropy", "window": 3}
    for bad in ("l2r@w2", "confidence@w0", "confidence@wx", "confidence@w-1"):
        with pytest.raises(UserError, match="window"):
            parse_order_spec(bad)
    with pytest.raises(UserError, match="window"):
        DecodeConfig(order="balanced-tree", window=2)
    with pytest.raises(UserError, match="window"):
        get_order("r2l", window=2)


@pytest.mark.parametrize("name", ["confidence", "entropy", "margin", "parallel", "threshold"])
def test_empty_slots_are_decided_last(name):
    """Slot 1 (the most confident, lowest entropy, widest margin) has the empty token (id 0) as its argmax: with
    ``empty_id`` every slot whose argmax is a word goes first, in the plain order among themselves; without it,
    slot 1 first. A threshold fills no empty-argmax slot but the first."""
    p = torch.tensor([[[0.35, 0.3, 0.2, 0.15], [0.9, 0.05, 0.05, 0.0], [0.1, 0.7, 0.2, 0.0], [0.1, 0.1, 0.6, 0.2]]])
    logp, ok = p.clamp(min=1e-9).log(), torch.ones(1, 4, dtype=torch.bool)
    kw = dict(k=4) if name == "parallel" else dict(threshold=0.05) if name == "threshold" else {}
    plain = get_order(name, **kw).rank_positions(logp, ok, 4)[0][0].tolist()
    last = get_order(name, empty_id=0, **kw).rank_positions(logp, ok, 4)[0][0].tolist()
    assert plain[0] == 1
    words = [s for s in plain if s not in (0, 1)]  # slots 2 and 3: a word is their argmax
    assert last[:2] == words and set(last[2:]) == {0, 1}
    assert last[2:] == [s for s in plain if s in (0, 1)]  # among the empty-argmax slots: the plain order
    sel, sel_ok = get_order(name, empty_id=0, **kw).choose(logp, ok)
    filled = sel[0][sel_ok[0]].tolist()
    if name == "threshold":
        assert filled == words  # every word slot is above 0.05, no empty-argmax slot is filled with them
    elif name == "parallel":
        assert filled == last
    else:
        assert filled == last[:1]


def _anchored_brute(logp: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """The anchored priority written out slot by slot: log p_i(w) + log[p_i(w) / Σ over i and its open neighbours]."""
    out = torch.full(ok.shape, float("nan"), dtype=torch.float64)
    for b in range(ok.shape[0]):
        for q in range(ok.shape[1]):
            if not ok[b, q]:
                continue
            w = int(logp[b, q].argmax())
            mass = sum(float(logp[b, n, w].exp()) for n in (q - 1, q, q + 1) if 0 <= n < ok.shape[1] and ok[b, n])
            out[b, q] = 2 * float(logp[b, q, w]) - math.log(mass)
    return out


def test_anchored_priority_matches_a_brute_force_loop():
    torch.manual_seed(0)
    logp = torch.randn(3, 6, 5).mul(2).log_softmax(-1)
    ok = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    got = get_order("anchored").score(logp, ok).double()
    want = _anchored_brute(logp, ok)
    assert torch.allclose(got[ok], want[ok], atol=1e-5)
    assert torch.equal(get_order("confidence").score(logp, ok), logp.max(-1).values)  # the others ignore ok


def test_anchored_defers_a_word_whose_slot_is_ambiguous():
    """Slots 0 and 1 both expect word 1 (0.6 / 0.55); slot 2 is surer of its slot (0.5, its neighbours give word 2
    little). Confidence fills slot 0 first, anchored slot 2; once slot 1 is decided, slot 0 is a plain slot again."""
    p = torch.tensor([[[0.1, 0.6, 0.1, 0.2], [0.15, 0.55, 0.1, 0.2], [0.2, 0.1, 0.5, 0.2]]])
    logp, ok = p.log(), torch.ones(1, 3, dtype=torch.bool)
    assert get_order("confidence").choose(logp, ok)[0].tolist() == [[0]]
    assert get_order("anchored").choose(logp, ok)[0].tolist() == [[2]]
    alone = get_order("anchored").score(logp[:, :1], ok[:, :1])
    assert torch.allclose(alone, logp[:, :1].max(-1).values)


def test_slots_ahead_matches_a_loop():
    """Open slots between each queried slot and the nearest decided slot (or <sep>) on its left, written out."""
    from plmgen.decoding.orders import slots_ahead

    gen = torch.Generator().manual_seed(0)
    open_ = torch.rand(6, 9, generator=gen) < 0.6
    open_[0], open_[1] = True, False  # nothing decided yet / everything decided
    q_pos, ok = get_order("confidence").open_positions(open_)
    got = slots_ahead(open_, q_pos)
    for b in range(open_.shape[0]):
        for q in range(q_pos.shape[1]):
            if ok[b, q]:
                p = int(q_pos[b, q])
                last = max([j for j in range(p) if not open_[b, j]], default=-1)
                assert got[b, q] == p - last - 1


@pytest.mark.parametrize("name", ["confidence", "entropy", "anchored"])
def test_ahead_penalty_ranks_by_score_minus_lambda_per_slot_ahead(name):
    """Brute force: the slot chosen maximises the order's own score minus λ·(open slots between it and the decided
    text on its left); λ = 0 is the plain order, a huge λ only continues decided text."""
    gen = torch.Generator().manual_seed(1)
    open_ = torch.rand(5, 8, generator=gen) < 0.7
    open_[:, 0] = True
    for lam in (0.0, 0.7, 3.0, 1e6):
        order = get_order(name, ahead=lam)
        q_pos, ok = order.queries(open_, None, None)
        logp = torch.randn(*q_pos.shape, 6, generator=gen).mul(2).log_softmax(-1)
        sel, sel_ok = order.choose(logp, ok)
        plain = get_order(name).score(logp, ok)
        for b in range(open_.shape[0]):
            cands = [q for q in range(q_pos.shape[1]) if ok[b, q]]
            ahead = [int(q_pos[b, q]) - max([j for j in range(int(q_pos[b, q])) if not open_[b, j]], default=-1) - 1
                     for q in cands]
            want = max(zip(cands, ahead), key=lambda c: float(plain[b, c[0]]) - lam * c[1])[0]
            assert int(sel[b, 0]) == want
            if lam == 1e6:
                assert dict(zip(cands, ahead))[want] == 0  # it continues decided text (from empty: left to right)


def test_ahead_penalty_decodes_between_left_to_right_and_the_free_order():
    run = _decoder()

    assert run(order="confidence", ahead_penalty=0.0) == run(order="confidence")
    assert run(order="confidence", ahead_penalty=1e6) == run(order="l2r")
    assert run(order="entropy", ahead_penalty=0.5) != run(order="entropy")  # the prior changes this model's choices
    assert run(order="confidence", ahead_penalty=0.5, beam=1) == run(order="confidence", ahead_penalty=0.5)
    assert len(run(order="confidence", ahead_penalty=0.5, beam=3)) == 3  # beam ranks by the same penalised score


def test_ahead_penalty_errors():
    from plmgen.decoding.generate import parse_order_spec

    assert parse_order_spec("confidence@d1") == {"order": "confidence", "ahead_penalty": 1.0}
    assert parse_order_spec("entropy@d0.5+beam2") == {"order": "entropy", "ahead_penalty": 0.5, "beam": 2}
    for bad, match in (("l2r@d1", "adaptive order"), ("confidence@dx", "NAME@dλ"), ("confidence@d-1", ">= 0"),
                       ("confidence@dnan", ">= 0"), ("confidence@dinf", ">= 0")):
        with pytest.raises(UserError, match=match):
            parse_order_spec(bad)
    with pytest.raises(UserError, match="adaptive order"):
        DecodeConfig(order="r2l", ahead_penalty=1.0)
    with pytest.raises(UserError, match="speculate does not take an ahead penalty"):
        DecodeConfig(order="confidence", ahead_penalty=1.0, speculate=2)
    assert DecodeConfig.from_dict(DecodeConfig(order="margin", ahead_penalty=0.25).to_dict()).ahead_penalty == 0.25
    order = get_order("confidence", ahead=1.0)
    with pytest.raises(RuntimeError, match="last queries"):  # rows it has no distances for are never ranked silently
        order.score(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))
