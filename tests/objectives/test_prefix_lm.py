"""prefix-lm: brute-force mask/label check, model-level leak test, loss, config checks, training on pairs."""

import itertools

import pytest
import torch

from plmgen.config import ModelConfig, ObjectiveConfig, Seq2SeqConfig
from plmgen.data.parallel import pair_batch
from plmgen.errors import UserError
from plmgen.objectives import build_objective
from plmgen.objectives.prefix_lm import prefix_lm_masks

from objectives.helpers import PAD, SEP, V, assert_perturbation, tiny_model

EOS = 2


def _pairs(seed: int, B: int = 5):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda lo, hi: int(torch.randint(lo, hi, (1,), generator=g))  # noqa: E731
    srcs = [torch.randint(9, V, (rnd(1, 7),), generator=g).tolist() for _ in range(B)]
    tgts = [torch.randint(9, V, (rnd(1, 8),), generator=g).tolist() for _ in range(B)]
    return pair_batch(srcs, tgts, SEP, PAD), srcs, tgts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masks_and_labels_brute_force(seed):
    batch, srcs, tgts = _pairs(seed)
    m = prefix_lm_masks(batch["input_ids"], batch["target"], batch["valid"], EOS)
    T = batch["input_ids"].shape[1]
    for b, (s, t) in enumerate(zip(srcs, tgts)):
        S, L = len(s), len(t)
        n = S + 1 + L
        # Written from the definition: source + <sep> = positions 0..S, target = S+1..S+L.
        want_pred = [S <= i < n for i in range(T)]
        assert m.predicts[b].tolist() == want_pred
        want_labels = t + [EOS]  # <sep> predicts t[0], ..., the last target token predicts eos
        assert m.labels[b, S:n].tolist() == want_labels
        for i, j in itertools.product(range(n), range(T)):
            if j >= n:
                want = False  # padding
            elif i <= S:
                want = j <= S  # source and <sep> see source and <sep>, never the target
            else:
                want = j <= i  # a target token sees the prefix, earlier target tokens and itself
            assert bool(m.content[b, i, j]) == want, (b, i, j)


def test_model_level_no_position_sees_a_later_token():
    """Perturbing token j changes the prediction made at position p iff j <= p (same row); the source's states never
    change when a target token does; other rows never change."""
    model = tiny_model(initializer_range=0.3).eval()
    batch, srcs, tgts = _pairs(3, B=4)
    m = prefix_lm_masks(batch["input_ids"], batch["target"], batch["valid"], EOS)

    def run(ids):
        with torch.no_grad():
            return model.logits(model(ids, seg_ids=batch["seg_ids"], content_mask=m.content).h)  # [B, T, V]

    ids = batch["input_ids"]
    base = run(ids)
    for b in range(ids.shape[0]):
        n = int(batch["valid"][b].sum())
        preds = m.predicts[b].nonzero().flatten().tolist()
        for j in range(n):
            assert_perturbation(run, ids, base, b, j, must_not_change=[p for p in preds if p < j],
                                must_change=[p for p in preds if p >= j])
        S = len(srcs[b])
        for j in range(S + 1, n):  # a target token never reaches a source / <sep> state
            ids2 = ids.clone()
            ids2[b, j] = 9 + (int(ids[b, j]) - 9 + 5) % (V - 9)
            with torch.no_grad():
                h = model(ids2, seg_ids=batch["seg_ids"], content_mask=m.content).h
                h0 = model(ids, seg_ids=batch["seg_ids"], content_mask=m.content).h
            torch.testing.assert_close(h[b, : S + 1], h0[b, : S + 1], atol=1e-5, rtol=0)
            others = [r for r in range(ids.shape[0]) if r != b]
            torch.testing.assert_close(h[others], h0[others], atol=1e-5, rtol=0)


def _objective(**s2s):
    model = tiny_model()
    return build_objective(ObjectiveConfig(name="prefix-lm", seq2seq=Seq2SeqConfig(**s2s)), model.cfg), model


def test_loss_is_mean_next_token_ce_over_target_and_eos():
    obj, model = _objective()
    batch, srcs, tgts = _pairs(4)
    out = obj(model, batch)
    assert out.n_tokens == {"prefix-lm": sum(len(t) + 1 for t in tgts)} and out.mems is None
    logp = model.logits(model(batch["input_ids"], batch["seg_ids"],
                              prefix_lm_masks(batch["input_ids"], batch["target"], batch["valid"], EOS).content).h)
    logp = logp.float().log_softmax(-1)
    nll = []
    for b, (s, t) in enumerate(zip(srcs, tgts)):
        for k, y in enumerate(t + [EOS]):
            nll.append(-logp[b, len(s) + k, y])
    torch.testing.assert_close(out.loss, torch.stack(nll).mean())
    out.loss.backward()
    assert model.word_embedding.weight.grad.abs().sum() > 0


def test_loss_goes_down_on_a_fixed_batch():
    obj, model = _objective()
    batch, _, _ = _pairs(5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = obj(model, batch).loss
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


@pytest.mark.parametrize("s2s,needle", [(dict(order="uniform:0.5,l2r:0.5"), "order"), (dict(mass_weight=1.0), "mass_weight"),
                                        (dict(predict_fraction=0.5), "predict_fraction"),
                                        (dict(length_weight=0.3), "length_weight"),
                                        (dict(end_marker=True), "end_marker"), (dict(unlikelihood=1.0), "unlikelihood"),
                                        (dict(empty_slots=2), "empty_slots")])
def test_knobs_that_do_not_apply_are_errors(s2s, needle):
    with pytest.raises(UserError, match=f"objective.seq2seq.{needle}"):
        _objective(**s2s)
    _objective(order="l2r")  # what prefix-lm does anyway


def test_needs_a_bidirectional_model():
    cfg = ObjectiveConfig(name="prefix-lm")
    with pytest.raises(UserError, match="attn_type"):
        build_objective(cfg, ModelConfig.named("tiny", attn_type="uni"))
