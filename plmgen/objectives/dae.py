"""``dae``: BERT-style denoising auto-encoding on the Transformer-XL backbone (the paper's "DAE + Transformer-XL").

Legend: B batch, T length, P predicted positions (static: ``dae_cap``), V vocab.

``dae_corruption(batch, cfg, special, vocab_size, generator)`` is the pure function: per row it picks
max(1, round(dae_prob·n)) of the n eligible tokens (as BERT's ``create_pretraining_data``), and replaces each by
``<mask>`` (dae_mask_frac), a random ordinary token (dae_random_frac) or keeps it (the rest). One content stream,
full bidirectional attention over the valid tokens (plus the reuse rule when the batch has ``reuse_len``), and the
loss is the cross-entropy of ``model.logits(out.h)`` at the chosen positions against the original tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from plmgen.batch import Batch
from plmgen.config import ObjectiveConfig
from plmgen.masks import content_mask, target_positions

from .base import (Objective, ObjectiveOutput, SpecialIds, block_reuse, eligible, masked_ce, rank_of,
                   reuse_len_of, stream_settings, uniform)

KEEP, MASK, RANDOM = 1, 2, 3  # DAECorruption.kind values (0 = not predicted)


@dataclass
class DAECorruption:
    input_ids: Tensor  # [B, T] corrupted input
    kind: Tensor  # [B, T] long: 0 not predicted, KEEP / MASK / RANDOM
    target_pos: Tensor  # [B, P] long
    target_valid: Tensor  # [B, P] bool
    content: Tensor  # [B, T, T] bool attention mask


def dae_cap(T: int, cfg: ObjectiveConfig) -> int:
    return max(1, round(cfg.dae_prob * T))


def dae_corruption(batch: Batch, cfg: ObjectiveConfig, special: SpecialIds, vocab_size: int,
                   generator: torch.Generator | None = None) -> DAECorruption:
    ids, valid, elig = batch["input_ids"], batch["valid"], eligible(batch)
    B, T = ids.shape
    dev = ids.device
    n = elig.sum(1, keepdim=True)  # [B, 1]
    count = torch.where(n > 0, torch.clamp(torch.round(cfg.dae_prob * n), min=1), n)
    prio = torch.where(elig, uniform((B, T), generator, dev), -1.0)
    chosen = elig & (rank_of(-prio) < count)  # the `count` eligible tokens of highest priority
    u = uniform((B, 2, T), generator, dev)  # the kind of corruption, then the random token
    kind = torch.where(u[:, 0] < cfg.dae_mask_frac, MASK,
                       torch.where(u[:, 0] < cfg.dae_mask_frac + cfg.dae_random_frac, RANDOM, KEEP))
    kind = torch.where(chosen, kind, 0)
    first = special.first_normal_id
    rand_tok = (first + u[:, 1] * (vocab_size - first)).long().clamp(max=vocab_size - 1)
    corrupted = torch.where(kind == MASK, special.mask_id, torch.where(kind == RANDOM, rand_tok, ids))
    pos = torch.arange(T, device=dev)[None]
    tpos, tvalid = target_positions(torch.where(chosen, pos, -1), dae_cap(T, cfg))
    no_order = torch.full((B, T), -1, dtype=torch.long, device=dev)
    content = block_reuse(content_mask(no_order, valid), pos, pos, valid, reuse_len_of(batch))
    return DAECorruption(input_ids=corrupted, kind=kind, target_pos=tpos, target_valid=tvalid, content=content)


class DAEObjective(Objective):
    name = "dae"
    query_stream = False
    uses_mems = True

    def sample(self, batch: Batch, generator: torch.Generator | None = None) -> DAECorruption:
        return dae_corruption(batch, self.cfg, self.special, self.model_cfg.vocab_size, generator)

    def forward(self, model, batch: Batch, mems=None, generator=None) -> ObjectiveOutput:
        c = self.sample(batch, generator)
        ids, tpos = batch["input_ids"], c.target_pos
        out = model(c.input_ids, seg_ids=batch.get("seg_ids"), content_mask=c.content, mems=mems,
                    **stream_settings(batch))
        h_t = torch.gather(out.h, 1, tpos[:, :, None].expand(-1, -1, out.h.shape[-1]))  # [B, P, d]
        loss, n = masked_ce(model.logits(h_t), torch.gather(ids, 1, tpos), c.target_valid)
        return self.output(loss, n, out.h, batch, out.mems)


OBJECTIVE = DAEObjective
