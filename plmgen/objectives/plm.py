"""XLNet's permutation language modelling with two-stream attention (reference ``data_utils.py``: ``_sample_mask``,
``_local_perm``), as one pure function ``plm_masks(batch, cfg, generator)`` and the ``plm`` objective.

Legend: B batch, T length, P predicted positions (static: ``num_predict_cap``), V vocab.

Per row and per part (the reuse part ``[0, reuse_len)``, then the rest — sampled separately, as the reference does):
1. *Which* tokens are predicted. Goal = ``num_predict`` (split between the parts in proportion to their lengths) or
   round(n/K) of the part's n eligible tokens (at least 1). ``span=True``: the reference's n-gram sampler — n ≤
   ``max_gram`` with p(n) ∝ 1/n, a context of n·alpha/beta tokens around each n-gram, left to right until the goal,
   then single random tokens to reach it exactly. ``span=False``: the goal's tokens uniformly at random, i.e. the
   last 1/K of a random factorization order. Functional tokens (SEP/CLS) and padding are never predicted; a span
   stops at them (the reference stops at word pieces; we have no tokenizer here).
2. *In which order*: the local permutation — positions are shuffled in blocks of ``perm_size`` (blocks in sequence
   order; one shuffle shared by all blocks of a row, exactly as the reference's ``tf.random_shuffle`` of a
   [perm_size, n_blocks] index). Targets in different blocks (and in different parts) are always predicted left
   to right: with ``perm_size`` 32 in a 64-token part, half the position pairs are cross-block and half of the
   rest happen to be in order, so ~3/4 of target pairs are predicted left to right. ``perm_size`` 0 (or >= the
   sequence length) draws one permutation of each whole part: the study's ``plm-perm-full`` row.
   Targets keep their permutation index as rank; every other token gets rank −1
   (context: visible to every position, sees only context). The reference instead keeps a permutation index for
   SEP/CLS (non-predicted, but ordered); we follow plmgen's rank contract where non-targets are context.
3. The reuse rule (``base.block_reuse``): the reuse part sees nothing after it; the rest sees all of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from plmgen.config import ObjectiveConfig
from plmgen.masks import StreamMasks

from .base import TwoStreamObjective, eligible, order_masks, reuse_len_of, uniform


@dataclass
class PLMOrder:
    rank: Tensor  # [B, T] long: −1 context/padding, >= 0 targets (prediction order)
    span_id: Tensor  # [B, T] long: −1 not predicted, else the id of the n-gram (or fill-up token) it belongs to
    reuse_len: int
    masks: StreamMasks  # content [B,T,T], query [B,P,T], target_pos/valid [B,P]


def num_predict_cap(T: int, reuse_len: int, cfg: ObjectiveConfig) -> int:
    """Static P: the most targets any row of length T can get (so every batch of a length has one shape)."""
    if cfg.num_predict is not None:
        return cfg.num_predict
    return sum(max(1, math.ceil(n / cfg.K)) for n in (reuse_len, T - reuse_len) if n > 0)


def part_goal(n_eligible: int, part: int, T: int, reuse_len: int, cfg: ObjectiveConfig) -> int:
    """How many tokens part 0 (reuse) or 1 (the rest) of a row predicts (never more than it has)."""
    if cfg.num_predict is not None:
        first = round(cfg.num_predict * reuse_len / T)
        goal = first if part == 0 else cfg.num_predict - first
    else:
        goal = max(1, round(n_eligible / cfg.K))
    return min(goal, n_eligible)


def _ngram_cdf(max_gram: int) -> list[float]:
    p = [1.0 / n for n in range(1, max_gram + 1)]
    total, acc, cdf = sum(p), 0.0, []
    for x in p:
        acc += x / total
        cdf.append(acc)
    return cdf


def sample_targets_row(elig: list[bool], goal: int, cfg: ObjectiveConfig, u: Tensor) -> list[int]:
    """One row-part: elig [n] -> span id per position (−1 = not predicted). u [3, n] uniforms drive every choice."""
    n = len(elig)
    span = [-1] * n
    if goal <= 0:
        return span
    got, sid = 0, 0
    if cfg.span:
        u_gram, u_ctx = u[0].tolist(), u[1].tolist()
        cdf = _ngram_cdf(cfg.max_gram)
        cur, it = 0, 0
        while cur < n and got < goal and it < n:
            g = next(k + 1 for k, c in enumerate(cdf) if u_gram[it] < c or k + 1 == len(cdf))
            g = min(g, goal - got)
            ctx = g * cfg.mask_alpha // cfg.mask_beta
            l_ctx = int(u_ctx[it] * ctx)
            it += 1
            beg = cur + l_ctx
            while beg < n and not elig[beg]:  # a span starts on a predictable token
                beg += 1
            if beg >= n:
                break
            end = beg
            while end < min(beg + g, n) and elig[end]:  # ... and stops at a functional token
                end += 1
            for i in range(beg, end):
                span[i] = sid
            sid, got = sid + 1, got + end - beg
            cur = end + (ctx - l_ctx)
    if got < goal:  # fill up with single tokens, highest priority first
        prio = u[2].tolist()
        free = sorted((i for i in range(n) if elig[i] and span[i] < 0), key=lambda i: -prio[i])
        for i in free[: goal - got]:
            span[i] = sid
            sid += 1
    return span


def local_perm_rank(B: int, n: int, perm_size: int, generator: torch.Generator | None) -> Tensor:
    """[B, n] permutation index of each position: blocks of perm_size in order, one shuffle shared by the blocks."""
    ps = min(perm_size, n) if perm_size > 0 else n
    pos = torch.arange(n)
    key = (pos // ps).double()[None] * 2 + uniform((B, ps), generator).double()[:, pos % ps]  # [B, n]
    return torch.argsort(torch.argsort(key, dim=1), dim=1)


def plm_order(batch: dict, cfg: ObjectiveConfig, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, int]:
    """Sample targets and factorization order -> (rank [B, T], span_id [B, T], reuse_len), on the CPU."""
    elig = eligible(batch).cpu()
    B, T = elig.shape
    R = reuse_len_of(batch)
    rank = torch.full((B, T), -1, dtype=torch.long)
    span_id = torch.full((B, T), -1, dtype=torch.long)
    for part, (a, b) in enumerate(((0, R), (R, T))):
        if b <= a:
            continue
        n = b - a
        u = uniform((B, 3, n), generator)
        perm = a + local_perm_rank(B, n, cfg.perm_size, generator)  # rest ranks come after all reuse ranks
        for r in range(B):
            e = elig[r, a:b].tolist()
            ids = torch.tensor(sample_targets_row(e, part_goal(sum(e), part, T, R, cfg), cfg, u[r]))
            offset = int(span_id[r].max()) + 1
            span_id[r, a:b] = torch.where(ids >= 0, ids + offset, ids)
            rank[r, a:b] = torch.where(ids >= 0, perm[r], -1)
    return rank, span_id, R


def plm_masks(batch: dict, cfg: ObjectiveConfig, generator: torch.Generator | None = None) -> PLMOrder:
    """The pure mask function of ``plm``: targets, order and every mask of one batch."""
    rank, span_id, R = plm_order(batch, cfg, generator)
    P = num_predict_cap(rank.shape[1], R, cfg)
    return PLMOrder(rank=rank, span_id=span_id, reuse_len=R, masks=order_masks(rank, batch["valid"].cpu(), P, R))


class PLMObjective(TwoStreamObjective):
    """``plm``: loss = cross-entropy of the query stream at the targets. Carries Transformer-XL memory."""

    name = "plm"

    def sample(self, batch: dict, generator: torch.Generator | None) -> StreamMasks:
        return plm_masks(batch, self.cfg, generator).masks


OBJECTIVE = PLMObjective
