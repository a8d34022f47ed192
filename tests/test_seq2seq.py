"""Seq2seq objective: brute-force mask leak test, model-level perturbation test, loss terms, parallel collate."""

import itertools
import math

import pytest
import torch

from plmgen.config import ModelConfig, Seq2SeqConfig
from plmgen.data.parallel import pair_batch
from plmgen.model import XLNet
from plmgen.objectives.seq2seq import (ORDER_IDS, batch_masks, mono_batch, predicted_ranks, sample_orders,
                                      target_ranks, with_aligned_positions, with_empty_slots, with_end_marker)

SEP, PAD, EOS, EMPTY = 4, 5, 2, 8


def _batch(g: torch.Generator, B: int = 5, vocab: int = 1000):
    srcs = [torch.randint(10, vocab, (int(torch.randint(1, 7, (1,), generator=g)),), generator=g).tolist() for _ in range(B)]
    tgts = [torch.randint(10, vocab, (int(torch.randint(1, 8, (1,), generator=g)),), generator=g).tolist() for _ in range(B)]
    return pair_batch(srcs, tgts, SEP, PAD), srcs, tgts


def test_layout_positions_segments_and_flags():
    b = pair_batch([[11, 12], [13]], [[21, 22, 23], [24]], SEP, PAD)
    assert b["input_ids"].tolist() == [[11, 12, SEP, 21, 22, 23], [13, SEP, 24, PAD, PAD, PAD]]
    assert b["seg_ids"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 1, 0, 0, 0]]
    assert b["target"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 1, 0, 0, 0]]
    assert b["functional"].tolist() == [[0, 0, 1, 0, 0, 0], [0, 1, 0, 1, 1, 1]]
    assert b["src_len"].tolist() == [2, 1] and b["tgt_len"].tolist() == [3, 1]


def test_end_marker_layout():
    b = with_end_marker(pair_batch([[11, 12], [13]], [[21, 22, 23], [24]], SEP, PAD), EOS, PAD)
    assert b["input_ids"].tolist() == [[11, 12, SEP, 21, 22, 23, EOS], [13, SEP, 24, EOS, PAD, PAD, PAD]]
    assert b["seg_ids"].tolist() == [[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0]]
    assert b["valid"].tolist() == [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]
    assert b["target"].tolist() == [[0, 0, 0, 1, 1, 1, 0], [0, 0, 1, 0, 0, 0, 0]]
    assert b["functional"].tolist() == [[0, 0, 1, 0, 0, 0, 1], [0, 1, 0, 1, 1, 1, 1]]
    assert b["end"].tolist() == [[0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0, 0]]


def test_aligned_positions_restart_after_sep_brute_force():
    """Row by row: source and <sep> at 0..S, every later column (targets, empty slots, end marker, padding) from 0."""
    g = torch.Generator().manual_seed(1)
    batch, srcs, _ = _batch(g, B=6)
    batch = with_aligned_positions(with_empty_slots(with_end_marker(batch, EOS, PAD), 2, EMPTY, PAD, g))
    T = batch["input_ids"].shape[1]
    for b, s in enumerate(srcs):
        S = len(s)
        assert batch["positions"][b].tolist() == list(range(S + 1)) + list(range(T - S - 1))


def test_aligned_positions_reach_the_backbone_and_keep_source_states():
    """The objective's aligned batch moves the query stream (positions are live) but not the source states (the
    source never sees the target, and its positions are unchanged)."""
    torch.manual_seed(0)
    model = XLNet(ModelConfig.named("tiny", mem_len=0)).eval()
    batch = with_end_marker(pair_batch([[11, 12, 13], [14]], [[21, 22], [23, 24, 25]], SEP, PAD), EOS, PAD)
    _, m = batch_masks(batch, Seq2SeqConfig(order="l2r"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(batch["input_ids"], batch["seg_ids"], m.content, m.query, m.target_pos)
        aligned = model(batch["input_ids"], batch["seg_ids"], m.content, m.query, m.target_pos,
                        positions=with_aligned_positions(batch)["positions"])
    src = ~batch["target"] & ~batch["end"] & batch["valid"]
    torch.testing.assert_close(plain.h[src], aligned.h[src])
    assert (plain.g - aligned.g).abs().max() > 1e-5  # (a small init: positions move it little, but well above 0)


@pytest.mark.parametrize("end_share", [0.0, 1.0, 0.5])
def test_empty_slots_keep_the_target_and_lay_out_like_pair_batch(end_share):
    """Dropping the empty slots gives each target back; the layout is pair_batch's of the targets with them. At the
    end: every empty slot follows the last token."""
    g = torch.Generator().manual_seed(3)
    counts, places, trailing = set(), set(), 0
    for _ in range(20):
        batch, srcs, tgts = _batch(g, B=6)
        out = with_empty_slots(batch, 3, EMPTY, PAD, g, end_share)
        new = []
        for b in range(6):
            row = out["input_ids"][b][out["target"][b]].tolist()
            assert [t for t in row if t != EMPTY] == tgts[b]
            n = row.count(EMPTY)
            assert 0 <= n <= 3 and int(out["tgt_len"][b]) == len(tgts[b]) + n
            counts.add(n)
            places.update(i for i, t in enumerate(row) if t == EMPTY and i < len(tgts[b]))
            assert end_share != 1.0 or row == tgts[b] + [EMPTY] * n
            trailing += end_share == 0.5 and n > 0 and row == tgts[b] + [EMPTY] * n
            new.append(row)
        ref = pair_batch(srcs, new, SEP, PAD)
        W = ref["input_ids"].shape[1]
        assert out["input_ids"].shape[1] == batch["input_ids"].shape[1] + 3 >= W
        for key in ("input_ids", "seg_ids", "valid", "functional", "target"):
            fill = {"input_ids": PAD, "functional": True}.get(key, 0)
            assert (out[key][:, W:] == fill).all(), key
            assert out[key][:, :W].long().tolist() == ref[key].long().tolist(), key
        assert out["tgt_len_max"] >= int(out["tgt_len"].max())
    assert counts == {0, 1, 2, 3}  # every count drawn
    assert len(places) == 0 if end_share == 1.0 else len(places) > 3  # random: empty slots not only at the end
    assert end_share != 0.5 or trailing > 20  # mixed: about half the rows with empty slots have them at the end


@pytest.mark.parametrize("order,fraction,marker,empty", [("uniform", 1.0, False, 0), ("l2r", 1.0, False, 0),
                                                         ("r2l", 1.0, False, 0), ("uniform", 0.4, False, 0),
                                                         ("l2r:0.5,r2l:0.5", 0.7, False, 0), ("uniform", 1.0, True, 0),
                                                         ("l2r", 0.7, True, 0), ("uniform", 1.0, True, 2)])
def test_masks_brute_force_no_leak(order, fraction, marker, empty):
    g = torch.Generator().manual_seed(1)
    batch, srcs, tgts = _batch(g, B=6)
    if empty:
        batch = with_empty_slots(batch, empty, EMPTY, PAD, g)
        tgts = [batch["input_ids"][b][batch["target"][b]].tolist() for b in range(6)]
    if marker:
        batch = with_end_marker(batch, EOS, PAD)
    rank, m = batch_masks(batch, Seq2SeqConfig(order=order, predict_fraction=fraction), g)
    B, T = rank.shape
    tgt, valid = batch["target"], batch["valid"]
    end = batch["end"] if marker else torch.zeros_like(tgt)
    for b in range(B):
        L = len(tgts[b])
        r = rank[b][tgt[b]]
        assert sorted(r.tolist()) == list(range(L))  # every target token has a distinct rank
        if order == "l2r":
            assert r.tolist() == list(range(L))
        if order == "r2l":
            assert r.tolist() == list(range(L - 1, -1, -1))
        # the predicted tokens are the last-ranked ceil(fraction * L), listed by rank
        n_pred = max(1, math.ceil(round(fraction * L, 6)))
        preds = [int(p) for p, ok in zip(m.target_pos[b], m.target_valid[b]) if ok]
        assert len(preds) == n_pred
        assert [int(rank[b, p]) for p in preds] == list(range(L - n_pred, L))
        for i, j in itertools.product(range(T), range(T)):
            if not valid[b, i]:
                continue
            if not valid[b, j]:
                want = False
            elif end[b, j]:  # the end marker: seen by the target tokens and itself only
                want = bool(tgt[b, i]) or i == j
            elif not tgt[b, i]:  # source / <sep> / end marker: sees the source side only
                want = not tgt[b, j]
            else:  # target: the source side, itself, and lower-ranked target tokens
                want = (not tgt[b, j]) or int(rank[b, j]) <= int(rank[b, i])
            assert bool(m.content[b, i, j]) == want, (b, i, j)
        for p, i in enumerate(preds):
            for j in range(T):  # (the end marker is context: every prediction sees it)
                want = bool(valid[b, j]) and ((not tgt[b, j]) or int(rank[b, j]) < int(rank[b, i]))
                assert bool(m.query[b, p, j]) == want, (b, i, j)
                assert bool(m.target_mapping[b, p, j]) == (j == i)
        for p in range(len(preds), m.target_pos.shape[1]):
            assert not m.query[b, p].any()


def test_order_mixture_draws_both_orders():
    codes = sample_orders("l2r:0.5,uniform:0.5", 400, torch.Generator().manual_seed(0))
    n_l2r, n_uniform = int((codes == ORDER_IDS["l2r"]).sum()), int((codes == ORDER_IDS["uniform"]).sum())
    assert 120 < n_l2r < 280 and n_l2r + n_uniform == 400
    codes = sample_orders("r2l:1,l2r:3", 400, torch.Generator().manual_seed(1))
    assert 60 < int((codes == ORDER_IDS["r2l"]).sum()) < 140 and bool(((codes == 0) | (codes == 1)).all())


def test_predicted_fraction_keeps_last_ranks():
    target = torch.tensor([[False, True, True, True, True]])
    rank = target_ranks(target, torch.tensor([ORDER_IDS["r2l"]]))
    assert rank.tolist() == [[-1, 3, 2, 1, 0]]
    assert predicted_ranks(rank, 0.5).tolist() == [[-1, 3, 2, -1, -1]]


def test_uniform_predict_sampling_draws_every_count_and_keeps_the_last_ranks():
    L, rows = 6, 3000
    rank = torch.stack([torch.randperm(L, generator=torch.Generator().manual_seed(i)) for i in range(rows)])
    kept = predicted_ranks(rank, 1.0, "uniform", torch.Generator().manual_seed(0))
    n = (kept >= 0).sum(1)
    counts = torch.bincount(n, minlength=L + 1)
    assert counts[0] == 0 and all(abs(int(c) - rows / L) < 0.2 * rows / L for c in counts[1:])  # uniform on 1..6
    assert torch.equal(kept[kept >= 0], rank[kept >= 0])  # predictions keep their ranks ...
    assert bool(((kept >= 0) == (rank >= (L - n)[:, None])).all())  # ... and are the last-ranked n
    capped = (predicted_ranks(rank, 0.5, "uniform", torch.Generator().manual_seed(1)) >= 0).sum(1)
    assert int(capped.min()) == 1 and int(capped.max()) == 3  # 1..ceil(0.5·6)


def test_model_perturbation_respects_order():
    """Changing a target token moves only what may see it: no source state, no query of rank <= its rank."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    model = XLNet(ModelConfig.named("tiny", mem_len=0)).eval()
    batch, srcs, tgts = _batch(g, B=4)
    rank, m = batch_masks(batch, Seq2SeqConfig(order="uniform"), g)

    def run(ids):
        with torch.no_grad():
            return model(ids, batch["seg_ids"], m.content, m.query, m.target_pos)

    base = run(batch["input_ids"])
    for b in range(4):
        for j in batch["target"][b].nonzero().flatten().tolist():
            ids = batch["input_ids"].clone()
            ids[b, j] = (ids[b, j] + 1) % 1000
            out = run(ids)
            src = ~batch["target"][b] & batch["valid"][b]
            torch.testing.assert_close(out.h[b][src], base.h[b][src])
            for p in range(m.target_pos.shape[1]):
                if not m.target_valid[b, p]:
                    continue
                i = int(m.target_pos[b, p])
                same = torch.allclose(out.g[b, p], base.g[b, p], atol=1e-6)
                if rank[b, j] >= rank[b, i]:
                    assert same, (b, i, j)
                else:
                    assert not same, (b, i, j)  # the check is live: a visible change does show up
            for other in range(4):
                if other != b:
                    torch.testing.assert_close(out.g[other], base.g[other])


def test_end_marker_tells_the_target_its_length_but_not_the_source():
    """With the marker the source states (what the length head reads) do not depend on the target length; every
    query does (a live check: without the marker the first l2r query cannot tell the lengths apart)."""
    torch.manual_seed(0)
    model = XLNet(ModelConfig.named("tiny", mem_len=0)).eval()
    g = torch.Generator().manual_seed(0)

    def run(tgt, marker):
        batch = pair_batch([[11, 12, 13]], [tgt], SEP, PAD)
        batch = with_end_marker(batch, EOS, PAD) if marker else batch
        _, m = batch_masks(batch, Seq2SeqConfig(order="l2r"), g)
        with torch.no_grad():
            return model(batch["input_ids"], batch["seg_ids"], m.content, m.query, m.target_pos)

    for marker in (False, True):
        short, long = run([21, 22], marker), run([21, 22, 23, 24], marker)
        torch.testing.assert_close(short.h[0, :4], long.h[0, :4])  # source + <sep>
        assert torch.allclose(short.g[0, 0], long.g[0, 0], atol=1e-6) != marker  # first query: sees 1 vs 3 slots


def test_mono_batch_splits_each_pair_into_two_rows():
    b = pair_batch([[11, 12], [13]], [[21, 22, 23], [24]], SEP, PAD)
    mb = mono_batch(b, SEP, PAD)
    assert mb["input_ids"].tolist() == [[11, 12, PAD], [13, PAD, PAD], [21, 22, 23], [24, PAD, PAD]]
    assert mb["valid"].sum(1).tolist() == [2, 1, 3, 1]


def _objective(**s2s):
    from plmgen.config import ObjectiveConfig
    from plmgen.objectives.seq2seq import Seq2SeqObjective

    cfg = ObjectiveConfig(name="seq2seq", seq2seq=Seq2SeqConfig(**s2s))
    mcfg = ModelConfig.named("tiny", mem_len=0)
    return Seq2SeqObjective(cfg, mcfg), XLNet(mcfg)


def test_objective_terms_and_weights():
    torch.manual_seed(0)
    obj, model = _objective(length_weight=0.3, mass_weight=0.5, max_len=8)
    batch, _, tgts = _batch(torch.Generator().manual_seed(0), B=4)
    out = obj(model, batch, generator=torch.Generator().manual_seed(0))
    assert set(out.terms) == {"seq2seq", "length", "mass"}
    assert out.weights == {"seq2seq": 1.0, "length": 0.3, "mass": 0.5}
    assert out.n_tokens["seq2seq"] == sum(len(t) for t in tgts) and out.n_tokens["length"] == 4
    total = sum(out.weights[k] * out.terms[k] for k in out.terms)
    torch.testing.assert_close(out.loss, total)
    out.loss.backward()
    assert obj.length_head.proj.weight.grad is not None and model.mask_emb.grad is not None


@pytest.mark.parametrize("marker, aligned", [(False, False), (True, False), (True, True)])
def test_objective_fits_a_fixed_batch(marker, aligned):
    """Over-fitting 8 fixed pairs: the seq2seq loss (over random orders) must fall well below its start."""
    torch.manual_seed(0)
    obj, model = _objective(order="l2r:0.5,uniform:0.5", length_weight=0.1, max_len=8, end_marker=marker,
                            aligned_positions=aligned)
    g = torch.Generator().manual_seed(0)
    batch, _, _ = _batch(g, B=8, vocab=60)
    opt = torch.optim.Adam(list(model.parameters()) + list(obj.parameters()), lr=1e-2)
    losses = []
    for _ in range(60):
        out = obj(model, batch, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.terms["seq2seq"].detach()))
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5, (losses[:5], losses[-5:])


def test_hf_xlnet_becomes_an_init_checkpoint(tmp_path):
    """experiments/hf_to_ckpt.py: an HF XLNet dir -> a checkpoint load_checkpoint (hence --init_from) reads."""
    import importlib.util
    from pathlib import Path

    from plmgen.hf import save_hf_xlnet
    from plmgen.train import load_checkpoint
    from train_helpers import make_dataset, make_tokenizer

    tok = make_tokenizer(tmp_path, make_dataset(tmp_path, n_train=40, n_dev=4))
    model = XLNet(ModelConfig.named("tiny", vocab_size=tok.vocab_size))
    save_hf_xlnet(model, tmp_path / "hf")
    spec = importlib.util.spec_from_file_location("hf_to_ckpt", Path(__file__).parents[1] / "experiments" / "hf_to_ckpt.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ckpt = mod.hf_to_ckpt(str(tmp_path / "hf"), str(tmp_path / "run" / "checkpoints" / "last.ckpt"), tokenizer=str(tok.path))
    loaded = load_checkpoint(ckpt)
    assert loaded.tokenizer_path is not None and loaded.config.model.vocab_size == tok.vocab_size
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[k], v)


def test_objective_rejects_uni_attention_and_bi_data():
    from plmgen.config import DataConfig, ObjectiveConfig
    from plmgen.errors import UserError
    from plmgen.objectives.seq2seq import Seq2SeqObjective

    with pytest.raises(UserError, match="attn_type"):
        Seq2SeqObjective(ObjectiveConfig(name="seq2seq"), ModelConfig.named("tiny", attn_type="uni"))
    with pytest.raises(UserError, match="bi_data applies to kind pretrain only"):
        DataConfig(kind="parallel", bi_data=True)


@pytest.mark.parametrize("window,unseen", [(1, False), (2, False), (3, False), (1, True), (2, True)])
def test_neighbour_unlikelihood_brute_force(window, unseen):
    """The unlikelihood term = a loop over predictions and their neighbours up to ``window`` slots away: a
    neighbour counts when it is a target token, the prediction's query sees it (or ``unseen``), it differs from the
    label and (window > 1) no nearer counted neighbour (left first at equal distance) holds the same token."""
    from plmgen.objectives.seq2seq import neighbour_candidates, neighbour_unlikelihood

    g = torch.Generator().manual_seed(4)
    batch, _, _ = _batch(g, B=5, vocab=12)  # a small vocabulary: neighbours often repeat the label
    rank, sm = batch_masks(batch, Seq2SeqConfig(order="uniform"), g)
    ids, target = batch["input_ids"], batch["target"]
    labels = ids.gather(1, sm.target_pos)
    logits = torch.randn(*labels.shape, 1000, generator=g)
    logp = torch.log_softmax(logits, -1)
    cand, ok = neighbour_candidates(labels, ids, target, sm, window=window, unseen=unseen)
    loss, count = neighbour_unlikelihood(logp.gather(2, cand), ok, sm.target_valid)
    want, n, skipped_equal, dups = 0.0, 0, 0, 0
    B, P = labels.shape
    for b in range(B):
        for p in range(P):
            if not sm.target_valid[b, p]:
                continue
            i, seen = int(sm.target_pos[b, p]), set()
            for j in [i + s * d for d in range(1, window + 1) for s in (-1, 1)]:  # nearest first, left first
                if 0 <= j < ids.shape[1] and target[b, j] and (unseen or sm.query[b, p, j]):
                    if ids[b, j] == labels[b, p]:
                        skipped_equal += 1
                        continue
                    if window > 1 and int(ids[b, j]) in seen:  # window 1: both sides count, as always
                        dups += 1
                        continue
                    seen.add(int(ids[b, j]))
                    want -= math.log(1 - math.exp(float(logp[b, p, ids[b, j]])))
                    n += 1
    assert n > 0 and int(count) == n and (dups > 0) == (window > 1)
    if unseen:  # more neighbours than the seen ones alone
        assert n > int(neighbour_candidates(labels, ids, target, sm, window=window)[1].sum())
    torch.testing.assert_close(loss, torch.tensor(want / int(sm.target_valid.sum()), dtype=loss.dtype))


def test_unlikelihood_term_is_weighted_and_trains():
    obj, model = _objective(unlikelihood=0.5, max_len=8)
    batch, _, _ = _batch(torch.Generator().manual_seed(0), B=4)
    out = obj(model, batch, generator=torch.Generator().manual_seed(0))
    assert out.weights["unlikelihood"] == 0.5 and float(out.terms["unlikelihood"].detach()) > 0
    torch.testing.assert_close(out.loss, sum(out.weights[k] * out.terms[k] for k in out.terms))
    out.loss.backward()
    assert model.mask_emb.grad is not None


@pytest.mark.parametrize("skip_empty", [False, True])
def test_empty_slots_train_the_real_length_and_spare_empty_neighbours(skip_empty):
    """With empty slots: the query stream predicts every slot (empty ones too), the length head's label is the
    real target length, and the unlikelihood term counts only real neighbour tokens (brute force) — with
    ``unlikelihood_skip_empty`` the nearest real slot on each side, across empty ones."""
    obj, model = _objective(unlikelihood=1.0, max_len=16, end_marker=True, empty_slots=3,
                            unlikelihood_skip_empty=skip_empty)
    batch, _, tgts = _batch(torch.Generator().manual_seed(0), B=5)
    labels_seen = []
    loss = obj.length_head.loss
    obj.length_head.loss = lambda logits, lengths: labels_seen.append(lengths.tolist()) or loss(logits, lengths)
    out = obj(model, batch, generator=torch.Generator().manual_seed(7))
    assert labels_seen == [[len(t) for t in tgts]]
    g = torch.Generator().manual_seed(7)  # the same draws as forward's: the empty slots, then the orders
    prep = obj.prepare(batch, g)
    sm = obj.sample(prep, g)
    ids, tgt = prep["input_ids"], prep["target"] & prep["valid"]
    assert out.n_tokens["seq2seq"] == int(tgt.sum()) > sum(len(t) for t in tgts)
    want, across = 0, 0
    for b, p in zip(*torch.nonzero(sm.target_valid, as_tuple=True)):
        i = int(sm.target_pos[b, p])
        for step in (-1, 1):
            j = i + step
            while skip_empty and 0 <= j < ids.shape[1] and tgt[b, j] and ids[b, j] == EMPTY:
                j += step  # across empty slots to the nearest real one
            if 0 <= j < ids.shape[1] and tgt[b, j] and sm.query[b, p, j] and ids[b, j] not in (EMPTY, ids[b, i]):
                want += 1
                across += abs(j - i) > 1
    assert (ids == EMPTY).any() and out.n_tokens["unlikelihood"] == want
    assert (across > 0) == skip_empty  # the setting reaches across empty slots, and only then


def test_unlikelihood_skip_empty_needs_both_terms():
    from plmgen.errors import UserError

    with pytest.raises(UserError, match="unlikelihood_skip_empty needs"):
        Seq2SeqConfig(unlikelihood=1.0, unlikelihood_skip_empty=True)
    with pytest.raises(UserError, match="unlikelihood_unseen needs"):
        Seq2SeqConfig(unlikelihood_unseen=True)


def test_local_order_swaps_only_near_slots_and_width_one_is_l2r():
    """Brute force over slot pairs: a later slot ranked before an earlier one is less than local_width away."""
    target = torch.ones(200, 12, dtype=torch.bool)
    target[:100, :3] = False  # rows with the target after a 3-token source
    local = torch.full((200,), ORDER_IDS["local"])
    for width in (1.0, 2.0, 3.5):
        rank = target_ranks(target, local, torch.Generator().manual_seed(3), local_width=width)
        swaps = 0
        for b in range(200):
            slots = target[b].nonzero()[:, 0].tolist()
            assert sorted(rank[b, slots].tolist()) == list(range(len(slots)))
            assert bool((rank[b][~target[b]] == -1).all())
            for a, i in enumerate(slots):
                for j in slots[a + 1:]:
                    if rank[b, j] < rank[b, i]:
                        assert j - i < width, (width, b, i, j)
                        swaps += 1
        if width == 1.0:
            assert swaps == 0  # left to right
        else:
            assert swaps > 100  # the jitter does reorder
    l2r = target_ranks(target, torch.full((200,), ORDER_IDS["l2r"]))
    assert torch.equal(target_ranks(target, local, torch.Generator().manual_seed(0), local_width=1.0), l2r)


def test_uniform_ranks_unchanged_by_the_local_order():
    """The uniform order's ranks are the random key's argsort among the target slots, as before."""
    target = torch.tensor([[False, True, True, True, True, True]] * 50)
    rank = target_ranks(target, torch.full((50,), ORDER_IDS["uniform"]), torch.Generator().manual_seed(7))
    u = torch.rand(50, 6, generator=torch.Generator().manual_seed(7))
    want = torch.argsort(torch.argsort(torch.where(target, u, 2.0), 1), 1)
    assert torch.equal(rank, torch.where(target, want, -1))


def test_ends_order_fills_a_prefix_and_a_suffix_and_leaves_other_orders_unchanged():
    """Brute force over every prefix of each ends row's order: the filled slots are the first a and the last b target
    slots; the split point reaches both extremes (pure l2r and pure r2l rows) and the runs interleave. A mixed batch
    with ``ends`` gives its uniform and l2r rows the same ranks as without ``ends`` in the batch."""
    target = torch.ones(300, 10, dtype=torch.bool)
    target[:150, :4] = False  # rows with the target after a 4-token source
    orders = torch.full((300,), ORDER_IDS["ends"])
    rank = target_ranks(target, orders, torch.Generator().manual_seed(5), ends=True)
    pure_l2r = pure_r2l = interleaved = 0
    for b in range(300):
        slots = target[b].nonzero()[:, 0].tolist()
        assert sorted(rank[b, slots].tolist()) == list(range(len(slots)))
        assert bool((rank[b][~target[b]] == -1).all())
        by_rank = [slots[i] for i in sorted(range(len(slots)), key=lambda i: int(rank[b, slots[i]]))]
        for k in range(1, len(slots) + 1):
            filled = sorted(slots.index(s) for s in by_rank[:k])
            a = next((i for i in range(len(filled)) if filled[i] != i), len(filled))  # longest filled prefix
            assert filled[a:] == list(range(len(slots) - (len(filled) - a), len(slots))), (b, k, filled)
        first_is_left = [slots.index(s) < len(slots) / 2 for s in by_rank]
        pure_l2r += by_rank == slots
        pure_r2l += by_rank == slots[::-1]
        interleaved += len(set(first_is_left[:4])) == 2
    assert pure_l2r > 5 and pure_r2l > 5 and interleaved > 100
    mixed = torch.tensor([ORDER_IDS["uniform"], ORDER_IDS["l2r"], ORDER_IDS["ends"]] * 100)
    with_ends = target_ranks(target, mixed, torch.Generator().manual_seed(9), ends=True)
    without = target_ranks(target, mixed, torch.Generator().manual_seed(9))
    keep = mixed != ORDER_IDS["ends"]
    assert torch.equal(with_ends[keep], without[keep])
    assert not torch.equal(with_ends[~keep], without[~keep])  # without the flag ends rows fall back to uniform keys
