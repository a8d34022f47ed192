"""Backbone properties that need no reference: information flow (leak test), memory equivalence, bf16, padding."""

import pytest
import torch

from hf_ref import random_model, tiny_config
from plmgen.masks import stream_masks


def random_ranks(B, T, n_tgt, g):
    rank = torch.full((B, T), -1)
    for b in range(B):
        tgt = torch.randperm(T, generator=g)[:n_tgt]
        rank[b, tgt] = torch.randperm(n_tgt, generator=g)
    return rank


@torch.no_grad()
def test_leak_query_stream_sees_exactly_its_mask():
    """Changing a token prediction p may not see leaves p's logits unchanged; one it may see changes them."""
    model = random_model(tiny_config(), seed=0)
    g = torch.Generator().manual_seed(1)
    B, T = 2, 8
    for trial in range(3):
        ids = torch.randint(0, 97, (B, T), generator=g)
        seg = torch.randint(0, 2, (B, T), generator=g)
        sm = stream_masks(random_ranks(B, T, 5, g))
        kw = dict(seg_ids=seg, content_mask=sm.content, query_mask=sm.query, target_pos=sm.target_pos)
        base = model.logits(model(ids, **kw).g)
        seen = 0
        for j in range(T):
            ids2 = ids.clone()
            ids2[:, j] = (ids2[:, j] + 1 + torch.randint(0, 96, (B,), generator=g)) % 97
            delta = (model.logits(model(ids2, **kw).g) - base).abs().amax(-1)  # [B, P]
            for b in range(B):
                for p in range(sm.target_pos.shape[1]):
                    if sm.query[b, p, j]:
                        assert delta[b, p] > 1e-4, f"prediction {p} should depend on token {j}"
                        seen += 1
                    else:
                        assert delta[b, p] == 0, f"prediction {p} leaks token {j}"
        assert seen > 0


@torch.no_grad()
@pytest.mark.parametrize("reuse_len", [0, 3])
def test_memory_equals_prepended_segment(reuse_len):
    """Segment 2 with mems == segment 2 computed with segment 1 prepended under the equivalent mask."""
    T1, T2 = 6, 5
    model = random_model(tiny_config(mem_len=T1), seed=2)
    g = torch.Generator().manual_seed(3)
    B = 2
    ids1 = torch.randint(0, 97, (B, T1), generator=g)
    ids2 = torch.randint(0, 97, (B, T2), generator=g)
    seg2 = torch.randint(0, 2, (B, T2), generator=g)
    sm2 = stream_masks(random_ranks(B, T2, 3, g))

    # As in XLNet's pipeline, the reuse part (the first R positions, cached as memory) sees only itself.
    R = reuse_len or T1
    m1 = torch.ones(B, T1, T1, dtype=torch.bool)
    m1[:, :R, R:] = False
    mems = model(ids1, content_mask=m1, reuse_len=reuse_len).mems
    assert mems[0].shape[1] == R
    out = model(ids2, seg_ids=seg2, content_mask=sm2.content, query_mask=sm2.query, target_pos=sm2.target_pos,
                mems=mems)

    # Equivalent single pass: the cached tokens prepended (seeing only themselves), segment 2 seeing all of them.
    T = R + T2
    ids = torch.cat([ids1[:, :R], ids2], 1)
    seg = torch.cat([torch.zeros(B, R, dtype=torch.long), seg2], 1)
    cm = torch.zeros(B, T, T, dtype=torch.bool)
    cm[:, :R, :R] = True
    cm[:, R:, :R] = True
    cm[:, R:, R:] = sm2.content
    qm = torch.zeros(B, sm2.query.shape[1], T, dtype=torch.bool)
    qm[:, :, :R] = True
    qm[:, :, R:] = sm2.query
    ref = model(ids, seg_ids=seg, content_mask=cm, query_mask=qm, target_pos=sm2.target_pos + R)
    torch.testing.assert_close(out.h, ref.h[:, R:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.g, ref.g, atol=1e-5, rtol=1e-5)
    # and the memory matters (the check can fail): without it the outputs differ
    alone = model(ids2, seg_ids=seg2, content_mask=sm2.content, query_mask=sm2.query, target_pos=sm2.target_pos)
    assert (alone.g - out.g).abs().max() > 1e-3


@torch.no_grad()
def test_bf16_autocast_finite_and_close_to_fp32():
    """bf16 autocast: finite, and log-probs within 0.1 (abs) of fp32 on a tiny model at standard init."""
    model = random_model(tiny_config(initializer_range=0.02, mem_len=8), seed=4)
    g = torch.Generator().manual_seed(5)
    B, T = 4, 16
    ids = torch.randint(0, 97, (B, T), generator=g)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 10:] = False  # padding
    sm = stream_masks(random_ranks(B, T, 6, g), valid)
    mems = [torch.randn(B, 8, 32, generator=g) for _ in range(3)]
    kw = dict(content_mask=sm.content, query_mask=sm.query, target_pos=sm.target_pos, mems=mems)
    ref = torch.log_softmax(model.logits(model(ids, **kw).g), -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, **kw)
        lp = torch.log_softmax(model.logits(out.g).float(), -1)
    assert torch.isfinite(lp).all() and torch.isfinite(out.h.float()).all()
    assert (lp - ref).abs().max() < 0.1


@pytest.mark.parametrize("bf16", [False, True])
def test_fully_masked_rows_are_finite_with_grads(bf16):
    """Rows whose mask allows nothing (padding, a first prediction without context) stay finite, fwd and bwd."""
    model = random_model(tiny_config(), seed=6).train()
    B, T, P = 2, 6, 3
    ids = torch.randint(0, 97, (B, T))
    cm = torch.zeros(B, T, T, dtype=torch.bool)  # nothing visible at all
    qm = torch.zeros(B, P, T, dtype=torch.bool)
    tpos = torch.tensor([[0, 1, 2], [3, 4, 5]])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(ids, content_mask=cm, query_mask=qm, target_pos=tpos)
        loss = model.logits(out.g).float().logsumexp(-1).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bi_data_needs_even_batch():
    model = random_model(tiny_config())
    with pytest.raises(ValueError, match="even batch"):
        model(torch.zeros(3, 4, dtype=torch.long), bi_data=True)
