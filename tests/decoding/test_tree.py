"""Tree-drafted speculative decoding: greedy output equals sequential greedy token for token (every order, windows,
padded batches, memory), the tree's shape is what its parents say, and accepted paths give several tokens per pass."""

from __future__ import annotations

import pytest
import torch

from plmgen.config import DecodeConfig
from plmgen.decoding import ORDERS
from plmgen.decoding.tree import Tree, tree_sizes
from plmgen.errors import UserError

from .helpers import model
from .test_speculative import assert_same, dec

ORDERS_1 = [o for o in ORDERS if o != "threshold"]


@pytest.fixture(scope="module")
def m():
    return model()


def tree(**kw):
    return dict(draft="tree", **kw)


@pytest.mark.parametrize("order", ORDERS_1)
@pytest.mark.parametrize("depth,a,b,r", [(1, 2, 2, 0), (2, 1, 1, 0), (3, 0, 1, 0), (2, 2, 2, 2)])
def test_tree_speculative_equals_sequential(m, order, depth, a, b, r):
    seq = dec(m, order=order, seed=2)
    spec = dec(m, order=order, seed=2, speculate=depth, **tree(tree_positions=a, tree_tokens=b, tree_expand=r))
    assert_same(spec, seq)
    assert all(1 <= h.passes <= h.steps for h in spec)
    assert sum(h.passes for h in spec) < sum(h.steps for h in spec)  # some drafted paths were accepted


@pytest.mark.parametrize("order", ["confidence", "entropy", "margin"])
@pytest.mark.parametrize("window", [1, 2, 4])
def test_tree_speculative_equals_sequential_in_a_window(m, order, window):
    seq = dec(m, order=order, window=window)
    assert_same(dec(m, order=order, window=window, speculate=2, **tree()), seq)


@pytest.mark.parametrize("order", ["l2r", "entropy"])
def test_tree_speculative_long_sources_through_memory(order):
    mm = model(mem_len=8)
    src = [[7, 8, 9], [20 + i for i in range(11)], [30 + i for i in range(6)]]
    kw = dict(src=src, order=order, max_segment=4)
    assert_same(dec(mm, **kw, speculate=2, **tree()), dec(mm, **kw))


@pytest.mark.parametrize("order", ["l2r", "balanced-tree"])
def test_tree_paths_are_accepted_when_the_verifier_agrees(order):
    """With the attention outputs zeroed every query row predicts the same token everywhere, so every path whose
    tokens are that token is accepted: a depth-3 tree gives c + 3 tokens per pass after the first. (Fixed orders
    only: for an adaptive order every slot would tie, and ties break on rounding.)"""
    mm = model()
    with torch.no_grad():
        for name, p in mm.named_parameters():
            if name.endswith("rel_attn.o.weight"):
                p.zero_()
    kw = dict(src=[[3, 4, 5]], lens=[9], order=order)
    spec = dec(mm, **kw, speculate=3, **tree(tree_positions=1, tree_tokens=1))
    assert_same(spec, dec(mm, **kw))
    assert spec[0].steps == 9 and spec[0].passes == 3  # 1, then 4 (c + a path of 3), then 4


@pytest.mark.parametrize("expand", [0, 2])
def test_tree_shape_matches_a_brute_force_walk_of_parents(expand):
    sizes = tree_sizes(3, 2, 1, fixed=False)  # 4, 6, 6 children per expanded node
    t = Tree.build(sizes, "cpu", expand)
    parent = t.parent.tolist()
    n_expanded = [1, 4 if not expand else 2, 4 * 6 if not expand else 2 * 2]
    assert t.n == 1 + sum(e * m for e, m in zip(n_expanded, sizes))
    for n in range(t.n):  # brute force: walk up the parents
        up, p = {n}, parent[n]
        while p >= 0:
            up.add(p)
            p = parent[p]
        assert set(t.anc[n].nonzero().flatten().tolist()) == up
    for d in range(len(sizes)):
        level = torch.arange(t.starts[d], t.starts[d + 1])
        kids, has = t.children(level, d)
        for n, k, h in zip(level.tolist(), kids.tolist(), has.tolist()):
            brute = [c for c, p in enumerate(parent) if p == n]
            assert (k if h else []) == brute
        if d:  # only each parent's first `expand` children have children
            rank = (level - t.starts[d]) % sizes[d - 1]
            assert has.tolist() == [bool(t.slot[p] >= 0) and (not expand or r < expand)
                                    for p, r in zip(t.parent[level].tolist(), rank.tolist())]


def test_tree_draft_rejects_sampling_and_the_recompute_backend():
    with pytest.raises(UserError, match="greedy"):
        DecodeConfig(order="confidence", sample=True, speculate=2, draft="tree")
    with pytest.raises(UserError, match="cache backend"):
        DecodeConfig(order="confidence", speculate=2, draft="tree", backend="recompute")
    with pytest.raises(UserError, match="draft must be"):
        DecodeConfig(speculate=2, draft="bush")
