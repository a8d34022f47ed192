"""XLNet's permutation language modelling with two-stream attention (reference ``data_utils.py``: ``_sample_mask``,
``_local_perm``), as one pure function ``plm_masks(batch, cfg, generator)`` and the ``plm`` objective.

Legend: B batch, T length, P predicted positions (static: ``num_predict_cap``), V vocab.

Per row and per part (the reuse part ``[0, reuse_len)``, then the rest — sampled separately, as the reference does):
1. *Which* tokens are predicted. Goal = ``num_predict`` (split between the parts in proportion to their lengths) or
   round(n/K) of the part's n eligible tokens (at least 1). ``span=True``: the reference's n-gram sampler — n ≤
   ``max_gram`` with p(n) ∝ 1/n, a context of n·alpha/beta tokens around each n-gram, left to right until the goal,
   then single random tokens to reach it exactly — as tensor code over all rows (``span_starts``: the span starts
   are prefix sums of the drawn lengths). ``span=False``: the goal's tokens uniformly at random, i.e. the
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

from plmgen.batch import Batch
from plmgen.config import ObjectiveConfig
from plmgen.masks import StreamMasks

from .base import TwoStreamObjective, eligible, order_masks, rank_of, reuse_len_of, uniform


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


def part_goal(n_eligible: Tensor, part: int, T: int, reuse_len: int, cfg: ObjectiveConfig) -> Tensor:
    """[B] how many tokens part 0 (reuse) or 1 (the rest) of each row predicts (never more than it has)."""
    if cfg.num_predict is not None:
        first = round(cfg.num_predict * reuse_len / T)
        goal = torch.full_like(n_eligible, first if part == 0 else cfg.num_predict - first)
    else:  # round half to even, as Python's round
        goal = torch.round(n_eligible.double() / cfg.K).long().clamp(min=1)
    return torch.minimum(goal, n_eligible)


def _ngram_cdf(max_gram: int, device) -> Tensor:
    p = 1.0 / torch.arange(1, max_gram + 1, dtype=torch.float32, device=device)
    return torch.cumsum(p / p.sum(), 0)


def _next_stop(elig: Tensor) -> Tensor:
    """elig [B, n] -> [B, n+1]: the first position >= p that may not be predicted (n if none)."""
    B, n = elig.shape
    pos = torch.arange(n + 1, device=elig.device).expand(B, n + 1)
    stop = torch.where(torch.cat([elig, elig.new_zeros(B, 1)], 1), n, pos)
    return torch.flip(torch.cummin(torch.flip(stop, [1]), 1).values, [1])


def span_starts(elig: Tensor, goal: Tensor, cfg: ObjectiveConfig, u: Tensor) -> tuple[Tensor, Tensor]:
    """The n-gram sampler, all rows at once -> (beg [B, n], keep [B, n]): span k covers [beg_k, beg_k + keep_k).

    Span k draws its n-gram length g_k (p(g) ∝ 1/g) and context ctx_k = g_k·alpha//beta from u[:, 0] and u[:, 1];
    l_ctx_k = ⌊u·ctx_k⌋ context tokens precede it, the rest follow. As in the reference's loop the next span starts
    after the previous one's n-gram and context, so every start is a prefix sum: beg_k = Σ_{j<k}(g_j + ctx_j) +
    l_ctx_k. A span stops at the first token that may not be predicted (a span starting on one is empty; the
    reference instead moved the start forward) and spans are kept, in order, until the goal is reached (the last
    one cut short).
    """
    B, n = elig.shape
    g = (torch.searchsorted(_ngram_cdf(cfg.max_gram, elig.device), u[:, 0].contiguous(), right=True) + 1)
    g = g.clamp(max=cfg.max_gram)  # [B, n]
    ctx = g * cfg.mask_alpha // cfg.mask_beta
    step = g + ctx
    beg = torch.cumsum(step, 1) - step + (u[:, 1] * ctx).long()  # strictly increasing along k
    stop = torch.gather(_next_stop(elig), 1, beg.clamp(max=n))
    length = (torch.minimum(beg + g, stop) - beg).clamp(min=0)
    before = torch.cumsum(length, 1) - length  # tokens taken by the spans before k
    keep = torch.minimum((goal[:, None] - before).clamp(min=0), length)
    return beg, keep


def sample_targets(elig: Tensor, goal: Tensor, cfg: ObjectiveConfig, u: Tensor) -> Tensor:
    """One part of every row: elig [B, n] bool, goal [B] -> span id [B, n] (−1 = not predicted; ids < 2n).

    u [B, 3, n] uniforms drive every choice: spans (``span_starts``), then single tokens of the highest
    priority u[:, 2] among the eligible rest until each row has exactly its goal.
    """
    B, n = elig.shape
    pos = torch.arange(n, device=elig.device).expand(B, n)
    span = torch.full((B, n), -1, dtype=torch.long, device=elig.device)
    got = torch.zeros_like(goal)
    if cfg.span:
        beg, keep = span_starts(elig, goal, cfg, u)
        k = torch.searchsorted(beg, pos.contiguous(), right=True) - 1  # the last span starting at or before p
        kc = k.clamp(min=0)
        inside = (k >= 0) & (pos < torch.gather(beg, 1, kc) + torch.gather(keep, 1, kc))
        span = torch.where(inside, kc, span)
        got = keep.sum(1)
    free = elig & (span < 0)
    place = rank_of(torch.where(free, -u[:, 2], 1.0))  # free tokens first, highest priority first
    fill = free & (place < (goal - got)[:, None])
    return torch.where(fill, n + pos, span)


def local_perm_rank(B: int, n: int, perm_size: int, generator: torch.Generator | None, device) -> Tensor:
    """[B, n] permutation index of each position: blocks of perm_size in order, one shuffle shared by the blocks
    (a last, shorter block uses the order of its slots in the same shuffle)."""
    ps = min(perm_size, n) if perm_size > 0 else n
    u = uniform((B, ps), generator, device)
    pos = torch.arange(n, device=device)
    rank = (pos // ps * ps)[None] + rank_of(u)[:, pos % ps]
    m = n % ps
    if m:
        rank[:, n - m :] = (n - m) + rank_of(u[:, :m])
    return rank


def plm_order(batch: Batch, cfg: ObjectiveConfig, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, int]:
    """Sample targets and factorization order -> (rank [B, T], span_id [B, T], reuse_len), on the batch's device."""
    elig = eligible(batch)
    B, T = elig.shape
    dev = elig.device
    R = reuse_len_of(batch)
    rank = torch.full((B, T), -1, dtype=torch.long, device=dev)
    span_id = torch.full((B, T), -1, dtype=torch.long, device=dev)
    for part, (a, b) in enumerate(((0, R), (R, T))):
        if b <= a:
            continue
        n = b - a
        u = uniform((B, 3, n), generator, dev)
        perm = a + local_perm_rank(B, n, cfg.perm_size, generator, dev)  # rest ranks come after all reuse ranks
        e = elig[:, a:b]
        ids = sample_targets(e, part_goal(e.sum(1), part, T, R, cfg), cfg, u)
        span_id[:, a:b] = torch.where(ids >= 0, ids + 2 * a, -1)  # part 1's ids start past part 0's (< 2R)
        rank[:, a:b] = torch.where(ids >= 0, perm, -1)
    return rank, span_id, R


def plm_masks(batch: Batch, cfg: ObjectiveConfig, generator: torch.Generator | None = None) -> PLMOrder:
    """The pure mask function of ``plm``: targets, order and every mask of one batch."""
    rank, span_id, R = plm_order(batch, cfg, generator)
    P = num_predict_cap(rank.shape[1], R, cfg)
    return PLMOrder(rank=rank, span_id=span_id, reuse_len=R, masks=order_masks(rank, batch["valid"], P, R))


class PLMObjective(TwoStreamObjective):
    """``plm``: loss = cross-entropy of the query stream at the targets. Carries Transformer-XL memory."""

    name = "plm"

    def sample(self, batch: Batch, generator: torch.Generator | None = None) -> StreamMasks:
        return plm_masks(batch, self.cfg, generator).masks


OBJECTIVE = PLMObjective
