"""The attention core's fast paths equal the general ones: strided rel_shift vs gather, split last block, dropout."""

from __future__ import annotations

import pytest
import torch

from hf_ref import random_model, tiny_config
from plmgen.attention import RelPos, dropout, dropout_add
from plmgen.masks import ranks_from_order, stream_masks


def two_stream_inputs(B=2, T=10, P=4, M=5, d=32, n_layer=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 97, (B, T), generator=g)
    seg = torch.randint(0, 3, (B, T), generator=g)
    order = torch.stack([torch.randperm(T, generator=g)[:P] for _ in range(B)])
    sm = stream_masks(ranks_from_order(order, T), num_predict=P)
    mems = [torch.randn(B, M, d, generator=g) for _ in range(n_layer)]
    return dict(input_ids=ids, seg_ids=seg, content_mask=sm.content, query_mask=sm.query, target_pos=sm.target_pos,
                mems=mems)


def reference_forward(model, input_ids, seg_ids, content_mask, query_mask, target_pos, mems, bi_data=False):
    """The plain loop through the public pieces: every row gathered (skew_rows=0), both streams in one block."""
    B, T = input_ids.shape
    M, P = mems[0].shape[1], target_pos.shape[1]
    rows = torch.cat([model.word_embedding(input_ids), model.mask_emb.expand(B, P, -1)], dim=1)
    k_pos = torch.arange(M + T)[None]
    rel = RelPos.build(torch.cat([k_pos[:, M:].expand(B, T), M + target_pos], 1), k_pos, model.cfg.d_model,
                       model.cfg.clamp_len, bi_data)
    seg_k = torch.cat([seg_ids.new_zeros(B, M), seg_ids], 1)
    seg_q = torch.cat([seg_ids, seg_ids.gather(1, target_pos)], 1)
    mask = torch.cat([torch.ones(B, T + P, M, dtype=torch.bool), torch.cat([content_mask, query_mask], 1)], 2)
    for i, layer in enumerate(model.layers):
        k, v = layer.rel_attn.keys_values(torch.cat([mems[i], rows[:, :T]], 1))
        rows = layer.ff(layer.rel_attn(rows, k, v, layer.rel_attn.project_table(rel.table), rel.index,
                                       seg_q[:, :, None] == seg_k[:, None, :], mask, model.biases(i)))
    return rows[:, :T], rows[:, T:]


@pytest.mark.parametrize("bi_data", [False, True])
def test_fast_forward_equals_gathered_loop_with_grads(bi_data):
    model = random_model(tiny_config(mem_len=5, clamp_len=6 if bi_data else -1), seed=3)
    inp = two_stream_inputs()
    out = model(**inp, bi_data=bi_data)
    h_ref, g_ref = reference_forward(model, **inp, bi_data=bi_data)
    torch.testing.assert_close(out.h, h_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.g, g_ref, rtol=1e-5, atol=1e-5)
    # A loss on the query stream alone: the split last block must give the same gradients as the shared one.
    grads = torch.autograd.grad(out.g.square().sum(), list(model.parameters()), allow_unused=True)
    ref = torch.autograd.grad(g_ref.square().sum(), list(model.parameters()), allow_unused=True)
    for (name, _), a, b in zip(model.named_parameters(), grads, ref):
        if b is None:
            assert a is None or not a.any(), name
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_skew_rows_detects_only_consecutive_rows():
    k_pos = torch.arange(12)[None]
    q_pos = torch.tensor([[4, 5, 6, 7, 2, 9], [4, 5, 6, 7, 8, 1]])  # row 4 breaks the run in the first batch row
    assert RelPos.build(q_pos, k_pos, 8).skew_rows == 4
    assert RelPos.build(q_pos[:1, :4], k_pos, 8).skew_rows == 4
    assert RelPos.build(q_pos, torch.tensor([[0, 1, 3]]), 8).skew_rows == 0  # keys not consecutive: gather
    rel = RelPos.build(torch.arange(3, 9)[None], k_pos, 8)
    i, j = torch.meshgrid(torch.arange(6), torch.arange(12), indexing="ij")
    assert rel.skew_rows == 6 and torch.equal(rel.index[0], rel.index[0, 0, 0] - i + j)


def test_dropout_rate_scale_and_gradient():
    torch.manual_seed(0)
    x = (torch.rand(400, 500) + 1).requires_grad_()
    y = dropout(x, 0.3, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005
    torch.testing.assert_close(y[kept], x[kept] / 0.7, rtol=1e-4, atol=0)  # inverted dropout scale
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)  # the backward drops exactly the forward's elements
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0, training=True) is x
    torch.manual_seed(1)
    a = dropout(x, 0.3, True)
    torch.manual_seed(1)
    assert torch.equal(a, dropout(x, 0.3, True))  # reproducible from the global seed


def test_dropped_prob_value_gradients():
    from plmgen.attention import DroppedProbValue

    g = torch.Generator().manual_seed(0)
    score = torch.randn(2, 3, 5, 7, dtype=torch.float64, generator=g).requires_grad_()
    v = torch.randn(2, 3, 7, 4, dtype=torch.float64, generator=g).requires_grad_()
    drop = torch.rand(2, 3, 5, 7, generator=g) < 0.3
    keep = (~drop).view(torch.uint8)
    torch.autograd.gradcheck(lambda s, x: DroppedProbValue.apply(s, x, keep, 1 / 0.7), (score, v))
    plain = torch.matmul(torch.softmax(score, -1).masked_fill(drop, 0), v) / 0.7
    torch.testing.assert_close(DroppedProbValue.apply(score, v, keep, 1 / 0.7), plain)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_add_is_residual_plus_dropout(dtype):
    """The fused residual form drops the same elements as dropout() from the same seed, with the same scale."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 300, generator=g).to(dtype).requires_grad_()
    y = (torch.rand(64, 300, generator=g) + 1).to(dtype).requires_grad_()
    torch.manual_seed(3)
    fused = dropout_add(x, y, 0.25, training=True)
    torch.manual_seed(3)
    plain = x + dropout(y, 0.25, training=True)
    tol = dict(rtol=0, atol=0) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(fused, plain, **tol)
    fused.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert torch.equal(y.grad != 0, plain.detach() != x.detach())  # gradient flows exactly to the kept elements
    assert dropout_add(x, y, 0.25, training=False).equal(x + y)
