"""plm: targets, spans, local permutation and masks re-derived by brute force; model-level leak checks."""

import math

import pytest
import torch

from plmgen.config import ObjectiveConfig
from plmgen.objectives.plm import num_predict_cap, plm_masks

from objectives.helpers import check_rank_masks, check_two_stream_leaks, make_batch


@pytest.mark.parametrize("reuse_len,span,perm_size", [(0, True, 0), (8, True, 4), (6, False, 5)])
def test_masks_match_brute_force(reuse_len, span, perm_size):
    cfg = ObjectiveConfig(K=4, span=span, perm_size=perm_size)
    for seed in range(4):
        batch = make_batch(3, 20, seed, reuse_len=reuse_len)
        o = plm_masks(batch, cfg, torch.Generator().manual_seed(seed))
        elig = batch["valid"] & ~batch["functional"]
        assert not (o.rank[~elig] >= 0).any(), "functional/padding tokens are never targets"
        check_rank_masks(o.rank, batch["valid"], reuse_len, o.masks)


def test_local_permutation_blocks_and_reuse_order():
    R, ps = 8, 4
    cfg = ObjectiveConfig(K=2, perm_size=ps, span=False)
    batch = make_batch(4, 24, 0, reuse_len=R, pad=False, ab=False)
    o = plm_masks(batch, cfg, torch.Generator().manual_seed(1))
    for b in range(4):
        for t in range(24):
            r = int(o.rank[b, t])
            if r < 0:
                continue
            a = 0 if t < R else R
            assert (r - a) // ps == (t - a) // ps, "a target's rank stays inside its perm_size block"
            assert (r < R) == (t < R), "reuse-part targets come first in the order"


def test_reuse_part_never_sees_the_rest():
    R = 8
    batch = make_batch(3, 20, 5, reuse_len=R)
    o = plm_masks(batch, ObjectiveConfig(K=3), torch.Generator().manual_seed(0))
    assert not o.masks.content[:, :R, R:].any()
    in_reuse = o.masks.target_pos < R
    assert not (o.masks.query[:, :, R:] & in_reuse[:, :, None]).any()


def test_count_is_about_T_over_K():
    for K in (4, 6, 7):
        cfg = ObjectiveConfig(K=K)
        total = n_elig = 0
        for seed in range(10):
            batch = make_batch(4, 64, seed)
            o = plm_masks(batch, cfg, torch.Generator().manual_seed(seed))
            elig = batch["valid"] & ~batch["functional"]
            for b in range(4):
                got, n = int((o.rank[b] >= 0).sum()), int(elig[b].sum())
                assert got == max(1, round(n / K))
                total, n_elig = total + got, n_elig + n
        assert abs(total / n_elig - 1 / K) < 0.02
        assert o.masks.target_pos.shape[1] == num_predict_cap(64, 0, cfg) == math.ceil(64 / K)


def test_fixed_num_predict_split_between_parts():
    cfg = ObjectiveConfig(num_predict=10)
    batch = make_batch(4, 32, 3, reuse_len=16, pad=False)
    o = plm_masks(batch, cfg, torch.Generator().manual_seed(3))
    assert o.masks.target_pos.shape[1] == 10
    assert ((o.rank >= 0).sum(1) == 10).all()
    assert ((o.rank[:, :16] >= 0).sum(1) == 5).all()


def _spans(span_id_row):
    groups = {}
    for t, s in enumerate(span_id_row.tolist()):
        if s >= 0:
            groups.setdefault(s, []).append(t)
    return list(groups.values())


def test_spans_contiguous_and_short():
    cfg = ObjectiveConfig(K=6, span=True)
    lengths = []
    for seed in range(10):
        batch = make_batch(4, 64, seed)
        o = plm_masks(batch, cfg, torch.Generator().manual_seed(seed))
        assert ((o.span_id >= 0) == (o.rank >= 0)).all()
        for b in range(4):
            for g in _spans(o.span_id[b]):
                assert g == list(range(g[0], g[0] + len(g))), "a span is contiguous"
                assert len(g) <= 5
                lengths.append(len(g))
    assert sum(lengths) / len(lengths) > 1.3, "span mode predicts n-grams, not only single tokens"
    o = plm_masks(make_batch(4, 64, 0), ObjectiveConfig(K=6, span=False), torch.Generator().manual_seed(0))
    assert all(len(g) == 1 for b in range(4) for g in _spans(o.span_id[b]))


@pytest.mark.parametrize("reuse_len", [0, 6])
def test_model_level_leaks(reuse_len):
    batch = make_batch(2, 16, 7, reuse_len=reuse_len)
    o = plm_masks(batch, ObjectiveConfig(K=3), torch.Generator().manual_seed(7))
    check_two_stream_leaks(batch, o.rank, o.masks, reuse_len)
