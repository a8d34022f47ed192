"""Mask-Predict style iterative refinement on top of any-order decoding.

Legend: B examples, L target slots, Q re-opened slots, V vocab.

After the first full fill (iteration 0, any order), iteration t = 1..T−1 (T = refine_iters + 1) re-opens the
n = ⌊N·(T−t)/T⌋ lowest-confidence positions of each example (N = its length) and re-predicts all of them in
parallel, as in Mask-Predict (Ghazvininejad et al.): the kept target tokens become *context* (rank −1: they see
the source and each other), the re-opened positions are queried at one shared rank (they do not see each other).

Exactness / caching: making kept tokens context changes their content states (they now see later-filled tokens),
so the decoding cache cannot be reused. Each iteration is one exact ``model(...)`` pass (``cache.full_forward``)
over context + target — T extra passes in all, cheap next to the fill. A position's confidence is its
log-probability when it was last predicted; ``Hypothesis.logprob`` becomes the sum of these (Mask-Predict's
score), no longer a chain-rule probability — rescore with ``search.sequence_logprob`` when that matters.
"""

from __future__ import annotations

import torch

from .cache import OPEN_RANK, DecodeLayout, full_forward
from .state import Bans


def refine(model, layout: DecodeLayout, hyps: list, iters: int, bans: Bans = Bans()) -> list:
    """Refine each ``Hypothesis`` in place for ``iters`` iterations (greedy re-prediction) and return them."""
    B, L = layout.batch, int(layout.tgt_len.max())
    dev = layout.ctx.device
    tokens = torch.full((B, L), layout.pad_id, dtype=torch.long, device=dev)
    conf = torch.full((B, L), float("inf"), device=dev)  # padding is never re-opened
    for b, h in enumerate(hyps):
        tokens[b, : len(h.tokens)] = torch.tensor(h.tokens, device=dev)
        conf[b, : len(h.tokens)] = torch.tensor(h.token_logprobs, device=dev)
    T = iters + 1
    for t in range(1, T):
        n = (layout.tgt_len * (T - t)) // T  # [B] positions to re-open per example
        if int(n.max()) == 0:
            break
        Q = int(n.max())
        q_pos = conf.topk(Q, dim=1, largest=False).indices  # [B, Q] lowest confidence first
        q_ok = torch.arange(Q, device=dev)[None] < n[:, None]
        rank = torch.full((B, L), -1, dtype=torch.long, device=dev)
        rank.scatter_(1, q_pos, torch.where(q_ok, OPEN_RANK, -1))
        logp = full_forward(model, layout, tokens, rank, q_pos * q_ok, q_ok)  # [B, Q, V]
        best = bans.apply(logp, q_pos, layout.tgt_len - 1).argmax(-1)
        lp = logp.gather(2, best[:, :, None])[..., 0]
        r, c = q_ok.nonzero(as_tuple=True)
        tokens[r, q_pos[r, c]] = best[r, c]
        conf[r, q_pos[r, c]] = lp[r, c]
        for b in range(B):
            if int(n[b]):
                hyps[b].trace.append(q_pos[b, : int(n[b])].tolist())
                hyps[b].steps += 1
    for b, h in enumerate(hyps):
        k = len(h.tokens)
        h.tokens, h.token_logprobs = tokens[b, :k].tolist(), conf[b, :k].tolist()
        h.logprob = float(conf[b, :k].sum())
    return hyps
