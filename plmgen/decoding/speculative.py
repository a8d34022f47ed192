"""Speculative any-order decoding: draft k (position, token) pairs, verify them all in the next pass.

Legend: R rows (examples), L target slots, k drafts per pass, W query window per level, V vocab.

Every pass is one backend call (``IncrementalCache.step``) with fill rows ``[c; d_1 .. d_k]`` and k + 1 *levels* of
query rows:

- ``c`` is the token chosen by the previous pass (always a token sequential decoding would choose), ``d_i`` the
  drafts proposed by the previous pass. The fills enter the content stream in that order (fill row f sees the
  fills before it), so the keys/values of accepted drafts written by this pass are exact.
- Level i's query rows see the context, every earlier token, ``c`` and ``d_1 .. d_i``: exactly the state sequential
  decoding is in after accepting i drafts. Fixed orders query their next W = k + 1 plan positions there, adaptive
  orders every open position.
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
from .state import RowState, ban, sampling_probs


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
    q_pos, q_ok = order.queries(open0, n_filled, plan)  # [R, Q] every open position
    drafted = torch.zeros(R, k + 1, q_pos.shape[1], dtype=torch.bool, device=dev)
    hit = (q_pos[:, None, :] == d_pos[:, :, None]) & d_ok[:, :, None]  # [R, k, Q] query row q is draft i
    drafted[:, 1:] = hit.long().cumsum(1) > 0  # level i: drafts 1..i are filled
    return q_pos[:, None, :].expand(R, k + 1, -1) * 1, q_ok[:, None, :] & ~drafted


def _sample(p: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF draw: p [.., V] (unnormalised is fine) and uniforms u [..] -> token ids [..]."""
    cdf = p.float().cumsum(-1)
    return (cdf <= u[..., None] * cdf[..., -1:]).sum(-1).clamp(max=p.shape[-1] - 1)


def speculative(model, layout, order: Order, cfg, banned, forced, on_step, examples, encoded=None):
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
    rows = torch.arange(R, device=dev)
    c_pos = c_tok = torch.zeros(R, 1, dtype=torch.long, device=dev)
    c_ok = torch.zeros(R, 1, dtype=torch.bool, device=dev)
    d_pos = d_tok = torch.zeros(R, k, dtype=torch.long, device=dev)
    d_ok = torch.zeros(R, k, dtype=torch.bool, device=dev)
    d_q = None  # [R, k, V] draft distributions (sampling)
    while bool(st.open.any()):
        open0 = st.open.clone()  # c already recorded; drafts not
        n0 = st.n_filled.clone()
        W = k + 1 if fixed else int(open0.sum(1).max())
        n_lv = 1 + int(d_ok.sum(1).max())  # levels needed: one per draft + the bonus level
        q_pos, q_ok = _levels(order, plan, open0, n0, d_pos, d_ok, W)  # [R, k+1, W]
        q_pos, q_ok = q_pos[:, :n_lv].contiguous(), q_ok[:, :n_lv].contiguous()
        sees = (1 + torch.arange(n_lv, device=dev))[None, :, None].expand(R, n_lv, W)
        logp = backend.step(torch.cat([c_pos, d_pos], 1), torch.cat([c_tok, d_tok], 1), torch.cat([c_ok, d_ok], 1),
                            q_pos.reshape(R, -1), q_ok.reshape(R, -1), sees.reshape(R, -1))
        logp = logp.view(R, n_lv, W, -1)
        blp = ban(logp, banned)
        st.passes += open0.any(1)
        if on_step is not None:
            on_step(logp[:, 0], q_pos[:, 0], q_ok[:, 0])

        if sampling:  # [R, 3k+2]: accept and resample per level, one per draft
            uni = torch.stack([torch.rand(3 * k + 2, generator=g) for g in gens]).to(dev)
        alive = open0.any(1)  # rows still walking the levels
        n_acc = torch.zeros(R, dtype=torch.long, device=dev)
        new_c_pos, new_c_tok = torch.zeros_like(c_pos), torch.zeros_like(c_tok)
        new_c_ok = torch.zeros_like(c_ok)
        for i in range(n_lv):
            lvl_ok = q_ok[:, i]  # [R, W]
            live = alive & lvl_ok.any(1)
            if not bool(live.any()):
                break
            sel, _ = order.choose(blp[:, i], lvl_ok)  # [R, 1] (k_per_step is 1)
            s = sel[:, 0]
            pos = q_pos[rows, i, s]  # [R] the position sequential decoding fills next
            lp_row = blp[rows, i, s]  # [R, V]
            has_draft = d_ok[:, i] if i < k else torch.zeros_like(live)
            same_pos = has_draft & (pos == d_pos[:, min(i, k - 1)])
            if sampling:
                p = sampling_probs(lp_row, cfg)  # [R, V]
                dq = d_q[:, min(i, k - 1)] if d_q is not None else p
                x = d_tok[:, min(i, k - 1)]
                ratio = p.gather(1, x[:, None])[:, 0] / dq.gather(1, x[:, None])[:, 0].clamp_min(1e-30)
                u = uni[:, i]
                accept = live & same_pos & (u < ratio.clamp(max=1.0))
                resid = torch.where(same_pos[:, None], (p - dq).clamp_min(0), p)
                resid = torch.where(resid.sum(1, keepdim=True) > 0, resid, p)
                tok = _sample(resid, uni[:, k + 1 + i])
            else:
                tok = lp_row.argmax(-1)
                accept = live & same_pos & (tok == d_tok[:, min(i, k - 1)])
            stop = live & ~accept
            tok = torch.where(accept, d_tok[:, min(i, k - 1)], tok)
            tok_lp = logp[rows, i, s].gather(1, tok[:, None])[:, 0]
            # Record the token (accepted draft or the stopping choice) as its own sequential step.
            st.fill(pos[:, None], tok[:, None], tok_lp[:, None], live[:, None])
            n_acc += accept
            new_c_pos[:, 0] = torch.where(stop, pos, new_c_pos[:, 0])
            new_c_tok[:, 0] = torch.where(stop, tok, new_c_tok[:, 0])
            new_c_ok[:, 0] |= stop
            alive = alive & accept

        # Rejected drafts leave the cache; accepted ones keep the keys/values this pass wrote.
        rejected = d_ok & (torch.arange(k, device=dev)[None] >= n_acc[:, None])
        if bool(rejected.any()):
            backend.reject(d_pos, rejected)
        c_pos, c_tok, c_ok = new_c_pos, new_c_tok, new_c_ok

        # Next drafts from the distributions of the level each row stopped at (c excluded).
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
        if sampling:
            d_q = sampling_probs(d_lp, cfg)
            d_tok = _sample(d_q, uni[:, 2 * k + 2:])
        else:
            d_tok = d_lp.argmax(-1)
        d_tok = d_tok * d_ok
    return [st.hypothesis(b, int(layout.tgt_len[b])) for b in range(R)]
