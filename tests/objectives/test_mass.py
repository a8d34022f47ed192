"""mass: one contiguous span of the right length, its order, masks by brute force, model-level leak check."""

import pytest
import torch

from plmgen.config import ObjectiveConfig
from plmgen.objectives.mass import mass_cap, mass_masks

from objectives.helpers import check_rank_masks, check_two_stream_leaks, make_batch


@pytest.mark.parametrize("order", ["l2r", "random"])
@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_one_contiguous_span(order, ratio):
    cfg = ObjectiveConfig(name="mass", mass_ratio=ratio, mass_order=order)
    saw_non_l2r = False
    for seed in range(6):
        batch = make_batch(4, 24, seed, ab=(seed % 2 == 0))
        o = mass_masks(batch, cfg, torch.Generator().manual_seed(seed))
        elig = batch["valid"] & ~batch["functional"]
        assert o.masks.target_pos.shape[1] == mass_cap(24, cfg)
        for b in range(4):
            e = elig[b].nonzero().flatten().tolist()
            span = [t for t in e if o.rank[b, t] >= 0]
            assert len(span) == max(1, round(ratio * len(e)))
            assert not (o.rank[b][~elig[b]] >= 0).any()
            i = e.index(span[0])
            assert span == e[i : i + len(span)], "one run of consecutive eligible tokens"
            ranks = [int(o.rank[b, t]) for t in span]
            assert sorted(ranks) == list(range(len(span)))
            if order == "l2r":
                assert ranks == list(range(len(span)))
            saw_non_l2r |= ranks != sorted(ranks)
        check_rank_masks(o.rank, batch["valid"], 0, o.masks)
    assert saw_non_l2r == (order == "random")


def test_model_level_leaks():
    batch = make_batch(2, 14, 3, reuse_len=5)
    o = mass_masks(batch, ObjectiveConfig(name="mass", mass_order="random"), torch.Generator().manual_seed(3))
    check_rank_masks(o.rank, batch["valid"], 5, o.masks)
    check_two_stream_leaks(batch, o.rank, o.masks, 5)
