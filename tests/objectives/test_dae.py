"""dae: 80/10/10 corruption statistics, predictions at the chosen positions only, masks, leaks."""

import torch

from plmgen.config import ObjectiveConfig
from plmgen.objectives.base import SpecialIds
from plmgen.objectives.dae import KEEP, MASK, RANDOM, dae_cap, dae_corruption

from objectives.helpers import V, assert_perturbation, make_batch, naive_may_see, tiny_model

SPECIAL = SpecialIds()


def test_proportions_and_positions():
    cfg = ObjectiveConfig(name="dae")
    counts = {KEEP: 0, MASK: 0, RANDOM: 0}
    chosen = n_elig = 0
    for seed in range(20):
        batch = make_batch(4, 64, seed)
        c = dae_corruption(batch, cfg, SPECIAL, V, torch.Generator().manual_seed(seed))
        ids, elig = batch["input_ids"], batch["valid"] & ~batch["functional"]
        assert not (c.kind[~elig] > 0).any(), "functional/padding tokens are never predicted"
        assert (c.input_ids[c.kind == MASK] == SPECIAL.mask_id).all()
        assert (c.input_ids[c.kind == KEEP] == ids[c.kind == KEEP]).all()
        assert (c.input_ids[c.kind == 0] == ids[c.kind == 0]).all(), "only chosen tokens are corrupted"
        rnd = c.input_ids[c.kind == RANDOM]
        assert ((rnd >= SPECIAL.first_normal_id) & (rnd < V)).all()
        for b in range(4):
            n = int(elig[b].sum())
            assert int((c.kind[b] > 0).sum()) == max(1, round(0.15 * n))
            k = int(c.target_valid[b].sum())
            assert c.target_pos[b, :k].tolist() == (c.kind[b] > 0).nonzero().flatten().tolist()
        for kind in counts:
            counts[kind] += int((c.kind == kind).sum())
        chosen, n_elig = chosen + int((c.kind > 0).sum()), n_elig + int(elig.sum())
        assert c.target_pos.shape[1] == dae_cap(64, cfg)
    total = sum(counts.values())
    assert abs(counts[MASK] / total - 0.8) < 0.05
    assert abs(counts[RANDOM] / total - 0.1) < 0.04
    assert abs(counts[KEEP] / total - 0.1) < 0.04
    assert abs(chosen / n_elig - 0.15) < 0.01


def test_mask_bidirectional_and_reuse_brute_force():
    R = 6
    batch = make_batch(3, 16, 2, reuse_len=R)
    c = dae_corruption(batch, ObjectiveConfig(name="dae"), SPECIAL, V, torch.Generator().manual_seed(2))
    for b in range(3):
        vd = batch["valid"][b].tolist()
        ctx = [-1] * 16
        for i in range(16):
            for j in range(16):
                assert bool(c.content[b, i, j]) == naive_may_see(ctx, vd, R, i, j, "content")


def test_model_level_leaks():
    R = 6
    model = tiny_model(initializer_range=0.3).eval()
    batch = make_batch(2, 16, 4, reuse_len=R)
    c = dae_corruption(batch, ObjectiveConfig(name="dae", dae_prob=0.3), SPECIAL, V, torch.Generator().manual_seed(4))

    def run(ids):  # the same corruption applied to perturbed originals
        inp = torch.where(c.kind == MASK, SPECIAL.mask_id, torch.where(c.kind == RANDOM, c.input_ids, ids))
        with torch.no_grad():
            h = model(inp, seg_ids=batch["seg_ids"], content_mask=c.content).h
            return model.logits(torch.gather(h, 1, c.target_pos[:, :, None].expand(-1, -1, h.shape[-1])))

    base = run(batch["input_ids"])
    for b in range(2):
        preds = [p for p in range(c.target_pos.shape[1]) if c.target_valid[b, p]]
        for j in range(16):
            if not batch["valid"][b, j] or c.kind[b, j] in (MASK, RANDOM):
                hidden, seen = preds, []  # padding, or an original the input no longer holds
            else:
                pos = [int(c.target_pos[b, p]) for p in preds]
                hidden = [p for p, t in zip(preds, pos) if t < R <= j]
                seen = [p for p, t in zip(preds, pos) if not t < R <= j]
            assert_perturbation(run, batch["input_ids"], base, b, j, hidden, seen)
