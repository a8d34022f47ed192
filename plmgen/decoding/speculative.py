"""Speculative any-order decoding: draft k (position, token) pairs, verify them all in the next pass.

Legend: R rows (examples), L target slots, k drafts per pass, W query window per level, V vocab.

Every pass is one backend call (``IncrementalCache.step``) with fill rows ``[c; d_1 .. d_k]`` and k + 1 *levels* of
query rows:

- ``c`` is the token chosen by the previous pass (always a token sequential decoding would choose), ``d_i`` the
  drafts proposed by the previous pass. The fills enter the content stream in that order (fill row f sees the
  fills before it), so the keys/values of accepted drafts written by this pass are exact.
- Level i's query rows see the context, every earlier token, ``c`` and ``d_1 .. d_i``: exactly the state sequential
  decoding is in after accepting i drafts. Fixed orders query their next W = k + 1 plan positions there, adaptive
  orders every open position (a windowed one the first window + k open slots, its window at every level).
- Walking the levels, level i makes sequential decoding's choice (the order picks the position, greedy takes the
  argmax / sampling draws a token); while it equals ``d_{i+1}`` the draft is accepted. At the first difference (or
  after the last draft) that choice becomes the next ``c``; the rejected drafts' slots are forgotten. Each pass so
  yields ``c`` plus the accepted drafts: at least one token.
- The next drafts come from the same level's distributions: the next k plan positions (fixed orders) or the k
  best-scored other open positions (adaptive), each predicted from that level's filled set.

Greedy is exact: every filled token is a choice sequential greedy makes in the same state (tested token for token,
every order). Sampling is lossless (speculative sampling): a draft token x drawn from the draft distribution q is
accepted with probability min(1, p(x)/q(x)), p being the verifier's (same temperature / top-k / top-p); on rejection
the token is drawn from normalise(max(0, p − q)); when the order picks another position than the draft's, the
token is drawn from p there. Beam search stays sequential.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cache import BACKENDS
from .orders import FixedOrder, Order, example_generator
from .state import Bans, RowState, sampling_probs


def _levels(order: Order, plan: Tensor | None, open0: Tensor, n_filled: Tensor, d_pos: Tensor, d_ok: Tensor,
            W: int) -> tuple[Tensor, Tensor]:
    """Query rows of every level: (q_pos, q_ok) [R, k+1, W'] (target indices)."""
    R, k = d_pos.shape
    dev = open0.device
    if isinstance(order, FixedOrder):
        L = plan.shape[1]
        n_len = open0.sum(1) + n_filled  # [R] example length
        col = n_filled[:, None, None] + torch.arange(k + 1, device=dev)[None, :, None] + torch.arange(W, device=dev)
        ok = col < n_len[:, None, None]  # [R, k+1, W]
        return plan.gather(1, col.clamp(max=L - 1).view(R, -1)).view(R, k + 1, W) * ok, ok
    q_pos, q_ok = order.open_positions(open0)  # [R, Q] every open position (a window's levels: the first W)
    q_pos, q_ok = q_pos[:, :W], q_ok[:, :W]
    drafted = torch.zeros(R, k + 1, q_pos.shape[1], dtype=torch.bool, device=dev)
    hit = (q_pos[:, None, :] == d_pos[:, :, None]) & d_ok[:, :, None]  # [R, k, Q] query row q is draft i
    drafted[:, 1:] = hit.long().cumsum(1) > 0  # level i: drafts 1..i are filled
    # A windowed order's level i queries the first W slots still open there (drafts 1..i filled).
    return q_pos[:, None, :].expand(R, k + 1, -1) * 1, order.in_window(q_ok[:, None, :] & ~drafted)


def _sample(p: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF draw: p [.., V] (unnormalised is fine) and uniforms u [..] -> token ids [..]."""
    cdf = p.float().cumsum(-1)
    return (cdf <= u[..., None] * cdf[..., -1:]).sum(-1).clamp(max=p.shape[-1] - 1)


def speculative(model, layout, order: Order, cfg, bans: Bans, forced, on_step, examples, encoded=None):
    """Greedy or sampling decode with ``cfg.speculate`` drafts per pass; hypotheses equal (greedy) / are
    distributed as (sampling) the sequential decoder's. Arguments as ``search._single`` (no forced targets)."""
    if forced is not None:
        raise ValueError("speculative decoding does not teacher-force; score with speculate 0")
    k, sampling = cfg.speculate, cfg.sample and cfg.temperature > 0
    backend = BACKENDS[cfg.backend](model, layout, encoded)
    st = RowState.new(layout.tgt_len, layout.pad_id)
    R, L = st.tokens.shape
    dev = st.tokens.device
    plan = order.init(layout.tgt_len.tolist(), L, dev, examples)
    fixed = isinstance(order, FixedOrder)
    # Each example draws a fixed number of uniforms per pass from its own stream (as the sequential sampler's
    # streams, seeded apart from random orders), so its sample never depends on the other rows of the batch.
    gens = [example_generator(cfg.seed + 1, ex) for ex in examples] if sampling else []
    c_pos = c_tok = torch.zeros(R, 1, dtype=torch.long, device=dev)
    c_ok = torch.zeros(R, 1, dtype=torch.bool, device=dev)
    d_pos = d_tok = torch.zeros(R, k, dtype=torch.long, device=dev)
    d_ok = torch.zeros(R, k, dtype=torch.bool, device=dev)
    d_q = None  # [R, k, V] draft distributions (sampling)
    uni = None  # [R, 3k+2] uniforms of a pass (sampling): accept and resample per level, one per draft
    while bool(st.open.any()):
        open0 = st.open.clone()  # c already recorded; drafts not
        n0 = st.n_filled.clone()
        W = k + 1 if fixed else int(open0.sum(1).max())
        if order.window:  # level i's window lies in the first window + i open slots
            W = min(W, order.window + k)
        fills = (c_pos, c_tok, c_ok), (d_pos, d_tok, d_ok)
        q_pos, q_ok, logp = _verify_pass(order, plan, backend, open0, n0, *fills, W)  # [R, n_lv, W(, V)]
        blp = bans.apply(logp, q_pos, layout.tgt_len - 1)
        st.passes += open0.any(1)
        if on_step is not None:
            on_step(logp[:, 0], q_pos[:, 0], q_ok[:, 0])
        if sampling:
            uni = torch.stack([torch.rand(3 * k + 2, generator=g) for g in gens]).to(dev)
        n_acc, (c_pos, c_tok, c_ok) = _walk_levels(order, st, logp, blp, q_pos, q_ok, open0.any(1),
                                                   (d_pos, d_tok, d_ok, d_q), cfg, uni)
        # Rejected drafts leave the cache; accepted ones keep the keys/values this pass wrote.
        rejected = d_ok & (torch.arange(k, device=dev)[None] >= n_acc[:, None])
        if bool(rejected.any()):
            backend.reject(d_pos, rejected)
        d_pos, d_tok, d_ok, d_q = _next_drafts(order, st, q_pos, q_ok, blp, n_acc, c_pos, c_ok, k, fixed, cfg, uni)
    return st.hypotheses(layout.tgt_len.tolist())


def _verify_pass(order: Order, plan, backend, open0: Tensor, n0: Tensor, c: tuple, d: tuple, W: int):
    """One backend call: fill rows [c; d_1 .. d_k], query rows of one level per draft + the bonus level
    -> (q_pos, q_ok) [R, levels, W] and model log-probs [R, levels, W, V]."""
    (c_pos, c_tok, c_ok), (d_pos, d_tok, d_ok) = c, d
    R, dev = open0.shape[0], open0.device
    n_lv = 1 + int(d_ok.sum(1).max())  # levels needed: one per draft + the bonus level
    q_pos, q_ok = _levels(order, plan, open0, n0, d_pos, d_ok, W)  # [R, k+1, W]
    q_pos, q_ok = q_pos[:, :n_lv].contiguous(), q_ok[:, :n_lv].contiguous()
    sees = (1 + torch.arange(n_lv, device=dev))[None, :, None].expand(R, n_lv, W)
    logp = backend.step(torch.cat([c_pos, d_pos], 1), torch.cat([c_tok, d_tok], 1), torch.cat([c_ok, d_ok], 1),
                        q_pos.reshape(R, -1), q_ok.reshape(R, -1), sees.reshape(R, -1))
    return q_pos, q_ok, logp.view(R, n_lv, W, -1)


def _walk_levels(order: Order, st: RowState, logp: Tensor, blp: Tensor, q_pos: Tensor, q_ok: Tensor, alive: Tensor,
                 drafts: tuple, cfg, uni: Tensor | None) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """Walk the levels while rows accept their drafts, recording each accepted draft and the stopping choice in
    ``st`` as sequential steps -> (accepted drafts per row [R], the next c as (pos, tok, ok) [R, 1])."""
    d_pos, d_tok, d_ok, d_q = drafts
    R, n_lv, k = q_pos.shape[0], q_pos.shape[1], d_pos.shape[1]
    dev = q_pos.device
    rows = torch.arange(R, device=dev)
    n_acc = torch.zeros(R, dtype=torch.long, device=dev)
    new_c_pos = torch.zeros(R, 1, dtype=torch.long, device=dev)
    new_c_tok, new_c_ok = torch.zeros_like(new_c_pos), torch.zeros(R, 1, dtype=torch.bool, device=dev)
    for i in range(n_lv):
        lvl_ok = q_ok[:, i]  # [R, W]
        live = alive & lvl_ok.any(1)
        if not bool(live.any()):
            break
        sel, _ = order.choose(blp[:, i], lvl_ok)  # [R, 1] (k_per_step is 1)
        s, j = sel[:, 0], min(i, k - 1)
        pos = q_pos[rows, i, s]  # [R] the position sequential decoding fills next
        has_draft = d_ok[:, i] if i < k else torch.zeros_like(live)
        same_pos = has_draft & (pos == d_pos[:, j])
        dq = None if d_q is None else d_q[:, j]
        tok, accept = _level_token(blp[rows, i, s], live, same_pos, d_tok[:, j], dq, cfg, uni, i, k)
        stop = live & ~accept
        tok = torch.where(accept, d_tok[:, j], tok)
        tok_lp = logp[rows, i, s].gather(1, tok[:, None])[:, 0]
        # Record the token (accepted draft or the stopping choice) as its own sequential step.
        st.fill(pos[:, None], tok[:, None], tok_lp[:, None], live[:, None])
        n_acc += accept
        new_c_pos[:, 0] = torch.where(stop, pos, new_c_pos[:, 0])
        new_c_tok[:, 0] = torch.where(stop, tok, new_c_tok[:, 0])
        new_c_ok[:, 0] |= stop
        alive = alive & accept
    return n_acc, (new_c_pos, new_c_tok, new_c_ok)


def _level_token(lp_row: Tensor, live: Tensor, same_pos: Tensor, x: Tensor, dq: Tensor | None, cfg,
                 uni: Tensor | None, i: int, k: int) -> tuple[Tensor, Tensor]:
    """Sequential decoding's token at level i from banned log-probs lp_row [R, V], and whether it accepts the draft
    token x [R] there -> (token [R], accept [R]). Greedy: the argmax, accepted when equal. Sampling: x (drawn from
    dq) is accepted with probability min(1, p(x)/q(x)); else the token is drawn from normalise(max(0, p − q)), or
    from p where the order picked another position than the draft's."""
    if uni is None:
        tok = lp_row.argmax(-1)
        return tok, live & same_pos & (tok == x)
    p = sampling_probs(lp_row, cfg)  # [R, V]
    dq = dq if dq is not None else p
    ratio = p.gather(1, x[:, None])[:, 0] / dq.gather(1, x[:, None])[:, 0].clamp_min(1e-30)
    accept = live & same_pos & (uni[:, i] < ratio.clamp(max=1.0))
    resid = torch.where(same_pos[:, None], (p - dq).clamp_min(0), p)
    resid = torch.where(resid.sum(1, keepdim=True) > 0, resid, p)
    return _sample(resid, uni[:, k + 1 + i]), accept


def _next_drafts(order: Order, st: RowState, q_pos: Tensor, q_ok: Tensor, blp: Tensor, n_acc: Tensor, c_pos: Tensor,
                 c_ok: Tensor, k: int, fixed: bool, cfg, uni: Tensor | None):
    """The next k drafts from the distributions of the level each row stopped at (c excluded)
    -> (d_pos, d_tok, d_ok [R, k], d_q [R, k, V] when sampling else None)."""
    R, n_lv = q_pos.shape[:2]
    dev = q_pos.device
    rows = torch.arange(R, device=dev)
    j = n_acc.clamp(max=n_lv - 1)
    lvl_pos, lvl_ok = q_pos[rows, j], q_ok[rows, j]  # [R, W]
    lvl_ok = lvl_ok & ~((lvl_pos == c_pos) & c_ok) & st.open.gather(1, lvl_pos)
    lvl_lp = blp[rows, j]  # [R, W, V]
    if fixed:
        dsel = torch.arange(1, k + 1, device=dev).expand(R, k)  # the window after c
        d_ok = lvl_ok.gather(1, dsel)
    else:
        dsel, d_ok = order.rank_positions(lvl_lp, lvl_ok, k)
        if dsel.shape[1] < k:  # fewer open positions than k
            pad = k - dsel.shape[1]
            dsel = torch.cat([dsel, dsel.new_zeros(R, pad)], 1)
            d_ok = torch.cat([d_ok, d_ok.new_zeros(R, pad)], 1)
    d_pos = lvl_pos.gather(1, dsel) * d_ok
    d_lp = lvl_lp.gather(1, dsel[:, :, None].expand(-1, -1, lvl_lp.shape[-1]))  # [R, k, V]
    d_q = None
    if uni is not None:
        d_q = sampling_probs(d_lp, cfg)
        d_tok = _sample(d_q, uni[:, 2 * k + 2:])
    else:
        d_tok = d_lp.argmax(-1)
    return d_pos, d_tok * d_ok, d_ok, d_q
