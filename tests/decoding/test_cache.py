"""The incremental cache equals a naive full recompute of model(...) with the rank mask, step by step."""

from __future__ import annotations

import pytest
import torch

from plmgen.config import DecodeConfig
from plmgen.decoding import ORDERS, decode, sequence_logprob
from plmgen.masks import stream_masks

from .helpers import LENS, PAD, SEP, SRC, model

MODES = [{}, {"k_per_step": 2}, {"beam": 3}]


EOS = 2


def run(m, cfg_kw, src=SRC, lens=LENS, backend="cache", end_id=None, aligned=False):
    steps = []
    cfg = DecodeConfig(backend=backend, **cfg_kw)
    hyps = decode(m, src, lens, cfg, sep_id=SEP, pad_id=PAD, end_id=end_id, aligned=aligned,
                  on_step=lambda lp, q, ok: steps.append((lp.clone(), q.clone(), ok.clone())))
    return hyps, steps


def assert_same(a, b):
    (ha, sa), (hb, sb) = a, b
    assert [h.tokens for h in ha] == [h.tokens for h in hb]
    assert [h.trace for h in ha] == [h.trace for h in hb]
    assert len(sa) == len(sb)
    for (la, qa, oa), (lb, qb, ob) in zip(sa, sb):
        assert torch.equal(qa * oa, qb * ob) and torch.equal(oa, ob)
        torch.testing.assert_close(la[oa], lb[ob], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor([h.logprob for h in ha]), torch.tensor([h.logprob for h in hb]),
                               atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def m():
    return model()


# Beam search fills one position per step, so the threshold order (several per step) has no beam variant.
CASES = [(o, mode_id) for o in ORDERS for mode_id in ("single", "k2", "beam3") if not (o == "threshold" and mode_id == "beam3")]


@pytest.mark.parametrize("order, mode_id", CASES)
def test_cache_equals_recompute(m, order, mode_id):
    mode = dict(zip(("single", "k2", "beam3"), MODES))[mode_id]
    assert_same(run(m, {"order": order, **mode}), run(m, {"order": order, **mode}, backend="recompute"))


MARKER_CASES = [(o, "single") for o in ORDERS] + [("confidence", "k2"), ("l2r", "beam3"), ("random", "beam3")]


@pytest.mark.parametrize("order, mode_id", MARKER_CASES)
def test_cache_equals_recompute_with_end_marker(m, order, mode_id):
    mode = dict(zip(("single", "k2", "beam3"), MODES))[mode_id]
    kw = {"order": order, **mode}
    a = run(m, kw, end_id=EOS)
    assert_same(a, run(m, kw, backend="recompute", end_id=EOS))
    # the marker is live: the first step's log-probs differ from decoding without it
    assert not torch.allclose(a[1][0][0], run(m, kw)[1][0][0])


@pytest.mark.parametrize("aligned", [False, True])
def test_end_marker_scores_like_the_training_layout(m, aligned):
    """Teacher-forced l2r scoring with the end marker = one model(...) pass over the seq2seq objective's own
    marked batch and masks (an independent construction: ``with_end_marker`` + ``batch_masks``), also with the
    training layout's aligned target positions (``with_aligned_positions``)."""
    from plmgen.config import Seq2SeqConfig
    from plmgen.data.parallel import pair_batch
    from plmgen.objectives.seq2seq import batch_masks, with_aligned_positions, with_end_marker

    tgt = [[21, 22, 23, 24], [25, 26, 27, 28, 29, 30], [31, 32, 33]]
    hyps = sequence_logprob(m, SRC, tgt, "l2r", sep_id=SEP, pad_id=PAD, end_id=EOS, aligned=aligned)
    batch = with_end_marker(pair_batch(SRC, tgt, SEP, PAD), EOS, PAD)
    batch = with_aligned_positions(batch) if aligned else batch
    _, sm = batch_masks(batch, Seq2SeqConfig(order="l2r"))
    with torch.no_grad():
        g = m(batch["input_ids"], batch["seg_ids"], sm.content, sm.query, sm.target_pos,
              positions=batch.get("positions")).g
        lp = torch.log_softmax(m.logits(g), -1)
    labels = batch["input_ids"].gather(1, sm.target_pos)
    ref = (lp.gather(2, labels[:, :, None])[..., 0] * sm.target_valid).sum(1)
    torch.testing.assert_close(torch.tensor([h.logprob for h in hyps]), ref, atol=1e-4, rtol=0)


ALIGNED_CASES = [("l2r", "single"), ("confidence", "single"), ("random", "k2"), ("entropy", "beam3")]


@pytest.mark.parametrize("order, mode_id", ALIGNED_CASES)
@pytest.mark.parametrize("end_id", [None, EOS])
def test_cache_equals_recompute_with_aligned_positions(m, order, mode_id, end_id):
    mode = dict(zip(("single", "k2", "beam3"), MODES))[mode_id]
    kw = {"order": order, **mode}
    a = run(m, kw, end_id=end_id, aligned=True)
    assert_same(a, run(m, kw, backend="recompute", end_id=end_id, aligned=True))
    # the positions are live: the first step's log-probs differ from the layout with targets after the context
    assert not torch.allclose(a[1][0][0], run(m, kw, end_id=end_id)[1][0][0])


@pytest.mark.parametrize("kw", [{"order": "confidence", "window": 2},
                                {"order": "parallel", "k_per_step": 2, "window": 3},
                                {"order": "margin", "window": 3, "beam": 3}])
def test_cache_equals_recompute_in_a_window(m, kw):
    assert_same(run(m, kw), run(m, kw, backend="recompute"))


def test_cache_equals_recompute_threshold_parallel(m):
    kw = {"order": "confidence", "threshold": 0.05}  # low threshold: several positions per step
    a = run(m, kw)
    assert any(len(s) > 1 for h in a[0] for s in h.trace), "threshold never filled in parallel"
    assert_same(a, run(m, kw, backend="recompute"))


def test_long_source_through_memory():
    m = model(mem_len=8)
    src = [[7, 8, 9], [20 + i for i in range(11)], [30 + i for i in range(6)]]
    kw = {"order": "confidence", "max_segment": 4, "k_per_step": 2}
    assert_same(run(m, kw, src=src), run(m, kw, src=src, backend="recompute"))
    assert_same(run(m, kw, src=src, end_id=EOS), run(m, kw, src=src, backend="recompute", end_id=EOS))
    assert_same(run(m, kw, src=src, end_id=EOS, aligned=True),
                run(m, kw, src=src, backend="recompute", end_id=EOS, aligned=True))
    # The memory really is attended to: changing the head of the long source moves the target's log-probs.
    other = [src[0], [40] + src[1][1:], src[2]]
    la, lb = run(m, kw, src=src)[1][0][0], run(m, kw, src=other)[1][0][0]
    assert (la[1] - lb[1]).abs().max() > 1e-3 and torch.allclose(la[0], lb[0])


def test_score_equals_one_pass_teacher_forcing(m):
    """Forced l2r/random decoding through the cache = one model(...) pass with the order's stream masks."""
    tgt = [[21, 22, 23, 24], [25, 26, 27, 28, 29, 30], [31, 32, 33]]
    for order in ("l2r", "random", "balanced-tree"):
        hyps = sequence_logprob(m, SRC, tgt, order, sep_id=SEP, pad_id=PAD, seed=3)
        for s, t, h in zip(SRC, tgt, hyps):
            ids = torch.tensor([s + [SEP] + t])
            C = len(s) + 1
            rank = torch.full((1, len(ids[0])), -1)
            perm = [p for step in h.trace for p in step]
            rank[0, [C + p for p in perm]] = torch.arange(len(t))
            sm = stream_masks(rank)
            seg = (torch.arange(ids.shape[1]) >= C).long()[None]
            with torch.no_grad():
                g = m(ids, seg, sm.content, sm.query, sm.target_pos).g
                lp = torch.log_softmax(m.logits(g), -1)[0]
            ref = sum(float(lp[i, ids[0, p]]) for i, p in enumerate(sm.target_pos[0].tolist()))
            assert abs(ref - h.logprob) < 1e-4
            assert h.tokens == t


@pytest.mark.parametrize("order", ["l2r", "random"])
def test_bf16_cache_matches_recompute(m, order):
    """Under bf16 autocast (the CPU fast path) the cache still scores every target like the full recompute, up to
    bf16 rounding, and stays within bf16 rounding of the fp32 scores."""
    tgt = [[21, 22, 23, 24], [25, 26, 27, 28, 29, 30], [31, 32, 33]]
    kw = dict(sep_id=SEP, pad_id=PAD, order=order)
    cache = sequence_logprob(m, SRC, tgt, bf16=True, **kw)
    recompute = sequence_logprob(m, SRC, tgt, bf16=True, backend="recompute", **kw)
    fp32 = sequence_logprob(m, SRC, tgt, **kw)
    assert [h.trace for h in cache] == [h.trace for h in recompute] == [h.trace for h in fp32]
    for c, r, f in zip(cache, recompute, fp32):
        torch.testing.assert_close(torch.tensor(c.token_logprobs), torch.tensor(r.token_logprobs), atol=0.01, rtol=0)
        torch.testing.assert_close(torch.tensor(c.token_logprobs), torch.tensor(f.token_logprobs), atol=0.1, rtol=0.05)


def test_encoded_context_states_see_long_sources_through_memory():
    """The one encoding of the source (the cache's keys and the length head's states) equals model(...) on the final
    segment with the head of a long source as Transformer-XL memory, row by row in a padded batch."""
    from plmgen.decoding.cache import build_layout, encode_context, encode_memory

    m = model(mem_len=8)
    src = [[7, 8, 9], [20 + i for i in range(11)]]
    with torch.inference_mode():
        layout = build_layout(m, src, [2, 2], SEP, PAD, max_segment=4)
        h = encode_context(m, layout).h
        for b, s in enumerate(src):
            ids = s + [SEP]
            head, tail = ids[:-4], torch.tensor([ids[-4:]])
            mems = encode_memory(m, head, 4) if head else None
            want = m(tail, seg_ids=torch.zeros_like(tail), mems=mems).h[0]
            torch.testing.assert_close(h[b, : tail.shape[1]], want, atol=1e-5, rtol=1e-5)
