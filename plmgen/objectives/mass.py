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

from plmgen.config import ObjectiveConfig
from plmgen.masks import StreamMasks

from .base import TwoStreamObjective, eligible, order_masks, reuse_len_of, uniform


@dataclass
class MassOrder:
    rank: Tensor  # [B, T] long: −1 context, 0..L−1 the span's prediction order
    masks: StreamMasks


def mass_cap(T: int, cfg: ObjectiveConfig) -> int:
    return max(1, round(cfg.mass_ratio * T))


def mass_masks(batch: dict, cfg: ObjectiveConfig, generator: torch.Generator | None = None) -> MassOrder:
    elig = eligible(batch).cpu()
    B, T = elig.shape
    rank = torch.full((B, T), -1, dtype=torch.long)
    u = uniform((B, 1 + T), generator)  # the start, then sort keys for a random order
    for b in range(B):
        pos = elig[b].nonzero().flatten()
        n = pos.numel()
        if n == 0:
            continue
        L = max(1, round(cfg.mass_ratio * n))
        start = min(int(u[b, 0] * (n - L + 1)), n - L)
        order = torch.arange(L) if cfg.mass_order == "l2r" else torch.argsort(torch.argsort(u[b, 1 : 1 + L]))
        rank[b, pos[start : start + L]] = order
    R = reuse_len_of(batch)
    return MassOrder(rank=rank, masks=order_masks(rank, batch["valid"].cpu(), mass_cap(T, cfg), R))


class MassObjective(TwoStreamObjective):
    name = "mass"

    def sample(self, batch: dict, generator: torch.Generator | None) -> StreamMasks:
        return mass_masks(batch, self.cfg, generator).masks


OBJECTIVE = MassObjective
