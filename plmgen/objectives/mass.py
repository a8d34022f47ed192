"""``mass``: MASS-style span prediction with XLNet's query stream.

Legend: B batch, T length, P predicted positions (static: ``mass_cap``), V vocab.

``mass_masks(batch, cfg, generator)`` is the pure function: per row one contiguous run of
L = max(1, round(mass_ratio·n)) of the n eligible tokens (contiguous in the row's eligible tokens: a functional token
inside a row is skipped over and stays context), ranked 0..L−1 left to right (``mass_order: l2r``) or in a random
order (``random``); every other token is context (rank −1) and sees no span token — MASS's encoder view of the
masked sentence, its decoder's order. Loss: cross-entropy of the query stream at the span.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from plmgen.batch import Batch
from plmgen.config import ObjectiveConfig
from plmgen.masks import StreamMasks

from .base import TwoStreamObjective, eligible, order_masks, rank_of, reuse_len_of, uniform


@dataclass
class MassOrder:
    rank: Tensor  # [B, T] long: −1 context, 0..L−1 the span's prediction order
    masks: StreamMasks


def mass_cap(T: int, cfg: ObjectiveConfig) -> int:
    return max(1, round(cfg.mass_ratio * T))


def mass_masks(batch: Batch, cfg: ObjectiveConfig, generator: torch.Generator | None = None) -> MassOrder:
    """The pure mask function of ``mass``, all rows at once on the batch's device."""
    elig = eligible(batch)
    B, T = elig.shape
    u = uniform((B, 1 + T), generator, elig.device)  # the start, then sort keys for a random order
    n = elig.sum(1)  # [B] eligible tokens
    L = torch.round(n.double() * cfg.mass_ratio).long().clamp(min=1)  # round half to even, as Python's round
    start = torch.minimum((u[:, 0] * (n - L + 1)).long(), n - L)
    off = torch.cumsum(elig.long(), 1) - 1 - start[:, None]  # place in the span of each eligible token
    in_span = elig & (off >= 0) & (off < L[:, None])
    order = off if cfg.mass_order == "l2r" else rank_of(torch.where(in_span, u[:, 1:], 2.0))  # span tokens first
    rank = torch.where(in_span, order, -1)
    R = reuse_len_of(batch)
    return MassOrder(rank=rank, masks=order_masks(rank, batch["valid"], mass_cap(T, cfg), R))


class MassObjective(TwoStreamObjective):
    name = "mass"

    def sample(self, batch: Batch, generator: torch.Generator | None = None) -> StreamMasks:
        return mass_masks(batch, self.cfg, generator).masks


OBJECTIVE = MassObjective
