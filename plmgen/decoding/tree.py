"""Speculative any-order decoding with a draft *tree* (greedy): many candidate continuations verified in one pass.

Legend: R rows (examples), L target slots, N tree nodes, P parent nodes of a level, W query rows per node,
V vocab, D tree depth (``cfg.speculate``), m_d children per node at depth d.

A pass's tree: node 0 holds ``c``, the token sequential decoding chose at the end of the last pass (certain);
every node at depth d < D has m_(d+1) children: candidates for sequential decoding's next choice in that node's
state (the context, every earlier token, and the node's ancestors and itself filled). One backend call
(``IncrementalCache.tree_step``) fills each node on top of its ancestors only (siblings never see each other) and
runs, for every node, the query rows the order needs in that node's state — an adaptive order every open slot
(a windowed one the slots its window can reach), a fixed order its next D + 1 plan slots.

Walking down from node 0, the order makes sequential decoding's choice in the current node's state; while a
child holds exactly that choice (slot and token) it is accepted — its keys/values are exact, since it saw exactly
its ancestors — and the walk moves to it. The first choice no child holds (or the choice at depth D) becomes the
next ``c``. A pass so yields ``c`` plus the accepted path, at least one token, and every token is the choice
sequential greedy decoding makes in the same state: outputs are identical (tested for every order).

The next tree is drafted from the distributions of the state the walk stopped in (``cfg.tree_positions`` = a,
``cfg.tree_tokens`` = b): for an adaptive order, a parent's children are the a best-scored open slots (the order's
own priority, argmax token) off the parent's path and off the neighbours below, and the b likeliest tokens at
each open neighbour of the parent's last one (depth 1) or two slots — filling a slot changes its neighbours most
(``experiments/results/speculative/draft_coverage.md``). For a fixed order, the a + 2b likeliest tokens at the
plan's slot of that depth. Sampling keeps the chain drafts of ``decoding.speculative``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .cache import IncrementalCache
from .orders import FixedOrder, Order
from .state import Bans, RowState


def tree_sizes(depth: int, a: int, b: int, fixed: bool) -> list[int]:
    """Children per node at depths 1..D: a + 2b (fixed orders; depth 1), a + 4b (deeper: two slots' neighbours)."""
    return [a + 2 * b if fixed or d == 1 else a + 4 * b for d in range(1, depth + 1)]


@dataclass
class Tree:
    """A tree shape shared by every row: nodes level by level, node 0 the root. Every node of ``expanded[d]`` has
    ``sizes[d]`` children (contiguous, best draft first); with ``expand`` = r > 0 only each parent's first r
    children get children of their own."""

    sizes: list[int]  # children per expanded node at depth 1..D
    starts: list[int]  # first node of each level 0..D (and N at the end)
    expanded: list[list[int]]  # per level 0..D-1: the nodes that have children, in order
    parent: Tensor  # [N] long, −1 for the root
    slot: Tensor  # [N] long: a node's index in its level's ``expanded`` (−1: no children)
    anc: Tensor  # [N, N] bool: node n's ancestors and n itself

    @staticmethod
    def build(sizes: list[int], device, expand: int = 0) -> "Tree":
        parent, starts, expanded = [-1], [0], [[0]]
        for d, m in enumerate(sizes):
            starts.append(len(parent))
            parent += [p for p in expanded[d] for _ in range(m)]
            if d + 1 < len(sizes):
                first = range(starts[-1], len(parent), m)
                expanded.append([f + j for f in first for j in range(min(expand, m) if expand else m)])
        starts.append(len(parent))
        slot = torch.full((len(parent),), -1, dtype=torch.long)
        for level in expanded:
            slot[level] = torch.arange(len(level))
        anc = torch.eye(len(parent), dtype=torch.bool)
        for n in range(1, len(parent)):
            anc[n] |= anc[parent[n]]
        return Tree(sizes, starts, expanded, torch.tensor(parent, device=device), slot.to(device), anc.to(device))

    @property
    def n(self) -> int:
        return self.starts[-1]

    def children(self, nodes: Tensor, depth: int) -> tuple[Tensor, Tensor]:
        """Children [R, m] of nodes [R] at ``depth`` (< D), and whether the node has any [R]."""
        m, s = self.sizes[depth], self.slot[nodes]
        return self.starts[depth + 1] + s.clamp(min=0)[:, None] * m + torch.arange(m, device=nodes.device), s >= 0


@dataclass
class _PassView:
    """One pass's log-probs, computed only for the query rows some node needs (``q_ok``), read back per node."""

    logp: Tensor  # [R, K, V] the kept rows' log-probs (K = most kept rows in a batch row)
    col: Tensor  # [R, N, W] each node row's column in logp (0 where not kept)
    q_pos: Tensor  # [R, N, W]
    q_ok: Tensor  # [R, N, W]
    bans: Bans
    last_slot: Tensor  # [R]

    @staticmethod
    def run(backend: IncrementalCache, bans: Bans, last_slot: Tensor, tree: Tree, node_pos: Tensor,
            node_tok: Tensor, node_ok: Tensor, q_pos: Tensor, q_ok: Tensor) -> "_PassView":
        R, N, W = q_pos.shape
        flat_ok = q_ok.reshape(R, -1)
        K = max(int(flat_ok.sum(1).max()), 1)
        keep = torch.sort((~flat_ok).to(torch.int8), dim=1, stable=True).indices[:, :K]  # kept rows first
        col = torch.zeros(R, N * W, dtype=torch.long, device=q_pos.device)
        col.scatter_(1, keep, torch.arange(K, device=q_pos.device).expand(R, K))
        k_pos, k_ok = q_pos.reshape(R, -1).gather(1, keep), flat_ok.gather(1, keep)
        logp = backend.tree_step(node_pos, node_tok, node_ok, tree.anc, k_pos, k_ok, keep // W)  # [R, K, V]
        return _PassView(logp, col.view(R, N, W), q_pos, q_ok, bans, last_slot)

    def rows(self, node: Tensor, banned: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Node node[r]'s query rows for every batch row r -> (log-probs [R, W, V] (banned ids at −inf unless
        ``banned`` is False), q_pos [R, W], q_ok [R, W])."""
        r = torch.arange(node.shape[0], device=node.device)
        lp, qp = self.logp[r[:, None], self.col[r, node]], self.q_pos[r, node]
        return (self.bans.apply(lp, qp, self.last_slot) if banned else lp), qp, self.q_ok[r, node]


def tree_speculative(model, layout, order: Order, cfg, bans: Bans, forced, on_step, examples, encoded=None):
    """Greedy decode with a draft tree of depth ``cfg.speculate`` per pass; hypotheses equal the sequential
    decoder's. Arguments as ``search._single`` (no forced targets, no sampling, the cache backend)."""
    if forced is not None:
        raise ValueError("speculative decoding does not teacher-force; score with speculate 0")
    backend = IncrementalCache(model, layout, encoded)
    st = RowState.new(layout.tgt_len, layout.pad_id)
    R, dev = st.tokens.shape[0], st.tokens.device
    plan = order.init(layout.tgt_len.tolist(), st.tokens.shape[1], dev, examples)
    fixed = isinstance(order, FixedOrder)
    tree = Tree.build(tree_sizes(cfg.speculate, cfg.tree_positions, cfg.tree_tokens, fixed), dev, cfg.tree_expand)
    node_pos = torch.zeros(R, tree.n, dtype=torch.long, device=dev)
    node_tok, node_ok = torch.zeros_like(node_pos), torch.zeros(R, tree.n, dtype=torch.bool, device=dev)
    while bool(st.open.any()):
        open0 = st.open.clone()  # c already recorded
        q_pos, q_ok = _node_queries(order, plan, open0, st.n_filled.clone(), tree, node_pos, node_ok)  # [R, N, W]
        q_ok[:, 1:] &= node_ok[:, 1:, None]  # a node that was not drafted has no state to query
        view = _PassView.run(backend, bans, layout.tgt_len - 1, tree, node_pos, node_tok, node_ok, q_pos, q_ok)
        st.passes += open0.any(1)
        if on_step is not None:
            on_step(*view.rows(torch.zeros(R, dtype=torch.long, device=dev), banned=False))
        accepted, stop, c = _walk(order, tree, st, view, open0.any(1), node_pos, node_tok, node_ok)
        backend.commit(node_pos, accepted)
        node_pos, node_tok, node_ok = _draft(order, tree, view, stop, c, cfg, fixed)
    return st.hypotheses(layout.tgt_len.tolist())


def _node_queries(order: Order, plan, open0: Tensor, n0: Tensor, tree: Tree, node_pos: Tensor,
                  node_ok: Tensor) -> tuple[Tensor, Tensor]:
    """Every node's query rows in its own state -> (q_pos, q_ok) [R, N, W] (target indices)."""
    R, N, D = open0.shape[0], tree.n, len(tree.sizes)
    dev = open0.device
    if isinstance(order, FixedOrder):  # node at depth d: plan slots n0 + d .. n0 + d + D
        depth = torch.cat([torch.full((tree.starts[d + 1] - tree.starts[d],), d, device=dev) for d in range(D + 1)])
        col = n0[:, None, None] + depth[None, :, None] + torch.arange(D + 1, device=dev)  # [R, N, D+1]
        ok = col < (open0.sum(1) + n0)[:, None, None]
        L = plan.shape[1]
        return plan.gather(1, col.clamp(max=L - 1).view(R, -1)).view(R, N, D + 1) * ok, ok
    q_pos, q_ok = order.open_positions(open0)  # [R, W] every open slot, left to right
    if order.window:  # a node's window lies in the first window + D open slots
        q_pos, q_ok = q_pos[:, : order.window + D], q_ok[:, : order.window + D]
    path = tree.anc[None] & node_ok[:, None, :]  # [R, N, N] filled path of each node
    on_path = ((q_pos[:, None, None, :] == node_pos[:, None, :, None]) & path[..., None]).any(2)  # [R, N, W]
    return q_pos[:, None, :].expand(R, N, -1), order.in_window(q_ok[:, None, :] & ~on_path)


def _walk(order: Order, tree: Tree, st: RowState, view: _PassView, alive: Tensor, node_pos: Tensor, node_tok: Tensor,
          node_ok: Tensor):
    """Sequential greedy's choices down the tree, each recorded in ``st`` -> (accepted nodes [R, N], the node each
    row stopped at [R], the next c as (pos, tok, ok) [R])."""
    R, dev = node_pos.shape[0], node_pos.device
    rows = torch.arange(R, device=dev)
    accepted = torch.zeros_like(node_ok)
    accepted[:, 0] = node_ok[:, 0]
    cur = torch.zeros(R, dtype=torch.long, device=dev)
    stop = cur.clone()
    c_pos, c_tok, c_ok = torch.zeros_like(cur), torch.zeros_like(cur), torch.zeros_like(alive)
    for d in range(len(tree.sizes) + 1):
        lp, qp, ok = view.rows(cur, banned=False)  # [R, W, V], [R, W]
        live = alive & ok.any(1)
        if not bool(live.any()):
            break
        blp = view.bans.apply(lp, qp, view.last_slot)
        s = order.choose(blp, ok)[0][:, 0]  # [R] (fixed orders: the first row)
        pos, tok = qp[rows, s], blp[rows, s].argmax(-1)
        tok_lp = lp[rows, s].gather(1, tok[:, None])
        st.fill(pos[:, None], tok[:, None], tok_lp, live[:, None])
        hit = torch.zeros_like(live)
        if d < len(tree.sizes):
            kids, has = tree.children(cur, d)  # [R, m], [R]
            match = has[:, None] & node_ok.gather(1, kids) & (node_pos.gather(1, kids) == pos[:, None]) & (
                node_tok.gather(1, kids) == tok[:, None])
            hit = live & match.any(1)
            nxt = kids[rows, match.int().argmax(1)]
            accepted[rows, nxt] = accepted[rows, nxt] | hit
        end = live & ~hit
        c_pos, c_tok, c_ok = torch.where(end, pos, c_pos), torch.where(end, tok, c_tok), c_ok | end
        stop = torch.where(end, cur, stop)
        cur = torch.where(hit, nxt, cur) if d < len(tree.sizes) else cur
        alive = alive & hit
    return accepted, stop, (c_pos, c_tok, c_ok)


def _draft(order: Order, tree: Tree, view: _PassView, stop: Tensor, c: tuple, cfg,
           fixed: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The next tree's nodes from the stop state's rows -> (node_pos, node_tok, node_ok) [R, N]."""
    R, dev = stop.shape[0], stop.device
    lp, qp, qok = view.rows(stop)  # [R, W, V], [R, W]
    node_pos = torch.zeros(R, tree.n, dtype=torch.long, device=dev)
    node_tok, node_ok = torch.zeros_like(node_pos), torch.zeros(R, tree.n, dtype=torch.bool, device=dev)
    node_pos[:, 0], node_tok[:, 0], node_ok[:, 0] = c
    a, b = cfg.tree_positions, cfg.tree_tokens
    stats = None if fixed else _RowStats.of(order, lp, qok, b)  # once per pass: every level reads the same rows
    for d, m in enumerate(tree.sizes, start=1):
        parents = torch.tensor(tree.expanded[d - 1], dtype=torch.long, device=dev)  # [P]
        if fixed:  # the plan's slot d (row d of the stop state's rows), a + 2b likeliest tokens
            tok = lp[:, d].topk(min(m, lp.shape[-1]), dim=-1).indices  # [R, m]
            pos = qp[:, d, None].expand_as(tok)
            ok = qok[:, d, None] & torch.isfinite(lp[:, d].gather(1, tok))
            pos, tok, ok = (t[:, None].expand(R, len(parents), -1) for t in (pos, tok, ok))
        else:
            path = tree.anc[parents][None] & node_ok[:, None, :]  # [R, P, N]
            around = [node_pos[:, parents]] + ([node_pos[:, tree.parent[parents]]] if d > 1 else [])
            pos, tok, ok = _candidates(stats, qp, qok, node_pos, path, torch.stack(around, 2), a)
        sl = slice(tree.starts[d], tree.starts[d + 1])
        ok = ok & node_ok[:, parents, None]
        node_pos[:, sl], node_tok[:, sl] = (pos * ok).reshape(R, -1), (tok * ok).reshape(R, -1)
        node_ok[:, sl] = ok.reshape(R, -1)
    return node_pos, node_tok, node_ok


class _RowStats(NamedTuple):
    """What drafting reads of the stop state's rows lp [R, W, V] (banned log-probs), computed once per pass."""

    priority: Tensor  # [R, W] fp64: the order's score of each slot (``Order.score``)
    top1_tok: Tensor  # [R, W] the argmax token
    top1_lp: Tensor  # [R, W] fp32: its log-prob
    top_tok: Tensor  # [R, W, b] the b likeliest tokens
    top_lp: Tensor  # [R, W, b] fp32: their log-probs

    @staticmethod
    def of(order: Order, lp: Tensor, ok: Tensor, b: int) -> "_RowStats":
        top1, top = lp.max(-1), lp.topk(min(b, lp.shape[-1]), dim=-1)
        return _RowStats(order.score(lp, ok).double(), top1.indices, top1.values.float(), top.indices,
                         top.values.float())


def _candidates(stats: _RowStats, qp: Tensor, qok: Tensor, node_pos: Tensor, path: Tensor, around: Tensor,
                a: int) -> tuple[Tensor, Tensor, Tensor]:
    """Children of P parents for an adaptive order -> (pos, tok, ok) [R, P, a + 2·n_around·b].

    stats: the stop state's rows at slots qp [R, W] (qok: open there), node_pos [R, N] with path [R, P, N] (each
    parent's filled path), around [R, P, n_around] the slots whose neighbours get b tokens each."""
    R, P = path.shape[:2]
    on_path = ((qp[:, None, :, None] == node_pos[:, None, None, :]) & path[:, :, None, :]).any(-1)  # [R, P, W]
    avail = qok[:, None, :] & ~on_path
    nb = (around[..., None] + torch.tensor([-1, 1], device=qp.device)).flatten(2)  # [R, P, 2n] neighbour slots
    eq = (qp[:, None, None, :] == nb[..., None]) & avail[:, :, None, :]  # [R, P, 2n, W]
    has = eq.any(-1)
    row = eq.int().argmax(-1)  # [R, P, 2n]
    n2 = nb.shape[2]
    earlier = torch.ones(n2, n2, dtype=torch.bool, device=qp.device).tril(-1)  # [i, j]: j before i
    dup = ((nb[..., :, None] == nb[..., None, :]) & has[..., None, :] & earlier).any(-1)
    has = has & ~dup
    is_nb = (eq & has[..., None]).any(2)  # [R, P, W]
    score = stats.priority[:, None, :].expand(R, P, -1).masked_fill(~(avail & ~is_nb), float("-inf"))  # [R, P, W]
    k = min(a, qp.shape[1])
    best = score.topk(k, dim=-1)
    pick = lambda t: t[:, None, :].expand(R, P, -1).gather(2, best.indices)  # noqa: E731  [R, P, k]
    b_pos, b_tok, b_lp = pick(qp), pick(stats.top1_tok), pick(stats.top1_lp)
    b_ok = torch.isfinite(best.values)
    at = (torch.arange(R, device=qp.device)[:, None, None], row)
    n_tok, n_lp = stats.top_tok[at], stats.top_lp[at]  # [R, P, 2n, b]
    n_pos, n_ok = nb[..., None].expand_as(n_tok), has[..., None].expand_as(n_tok)
    z = torch.zeros(R, P, a - k, dtype=torch.long, device=qp.device)  # fewer open slots than a
    pos, tok = torch.cat([b_pos, z, n_pos.flatten(2)], 2), torch.cat([b_tok, z, n_tok.flatten(2)], 2)
    ok = torch.cat([b_ok, z.bool(), n_ok.flatten(2)], 2)
    score = torch.cat([b_lp, z.float(), n_lp.flatten(2)], 2).masked_fill(~ok, float("-inf"))
    order_ = score.sort(dim=2, descending=True, stable=True).indices  # likeliest drafts first (expanded first)
    return pos.gather(2, order_), tok.gather(2, order_), ok.gather(2, order_)
