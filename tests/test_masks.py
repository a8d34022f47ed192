"""Fast mask construction vs. a brute-force re-derivation written independently with loops."""

import torch

from plmgen.masks import causal_mask, ranks_from_order, stream_masks


def brute_may_see(rank, valid, i, j, stream):
    if not valid[j]:
        return stream == "content" and i == j
    if stream == "content" and i == j:
        return True
    ri, rj = rank[i], rank[j]
    if rj == -1:
        return True  # context is visible to everyone
    if ri == -1:
        return False  # context never sees targets
    return rj < ri


def test_stream_masks_match_brute_force():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        B, T = 3, 9
        rank = torch.full((B, T), -1)
        valid = torch.ones(B, T, dtype=torch.bool)
        for b in range(B):
            n = int(torch.randint(0, T, (1,), generator=g))
            valid[b, T - int(torch.randint(0, 3, (1,), generator=g)):] = False
            tgt = torch.randperm(T, generator=g)[:n]
            tgt = tgt[valid[b, tgt]]
            rank[b, tgt] = torch.randint(0, 4, (len(tgt),), generator=g)  # ties = parallel predictions
        sm = stream_masks(rank, valid)
        for b in range(B):
            tgts = sorted((int(rank[b, t]), t) for t in range(T) if rank[b, t] >= 0)
            assert sm.target_valid[b].sum() == len(tgts)
            for p, (_, t) in enumerate(tgts):
                assert rank[b, sm.target_pos[b, p]] == rank[b, t]
                assert sm.target_mapping[b, p].sum() == 1 and sm.target_mapping[b, p, sm.target_pos[b, p]]
                t = int(sm.target_pos[b, p])
                for j in range(T):
                    assert bool(sm.query[b, p, j]) == brute_may_see(rank[b], valid[b], t, j, "query")
            for i in range(T):
                for j in range(T):
                    assert bool(sm.content[b, i, j]) == brute_may_see(rank[b], valid[b], i, j, "content")


def test_ranks_from_order():
    order = torch.tensor([[4, 0, 2]])
    rank = ranks_from_order(order, 6, context=torch.tensor([[False, False, True, False, False, False]]))
    assert rank.tolist() == [[1, -1, -1, -1, 0, -1]]


def test_causal_mask_brute_force():
    for same_length in (False, True):
        T, M = 5, 3
        m = causal_mask(T, M, same_length)
        for i in range(T):
            for j in range(M + T):
                expect = j <= i + M and (not same_length or j >= i)
                assert bool(m[i, j]) == expect
