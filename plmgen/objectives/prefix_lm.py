"""Prefix LM (UniLM's seq2seq LM): the autoregressive baseline on the same backbone, data and tokenizer.

Legend: B batch, T length, N predicting positions in the batch, d model dim, V vocab.

On a seq2seq batch ``[source <sep> target]`` (plmgen/data/parallel.py) the source and ``<sep>`` see each other
fully and never the target; target token t sees the source, ``<sep>``, the target tokens before it and itself (the
content mask of the target ranked left to right). No query stream: the *content* state at position t predicts the
token at t + 1 — ``<sep>`` predicts the first target token, the last target token predicts ``</s>`` (the tokenizer's
eos id), so the decoder (plmgen/decoding/ar.py) knows where to stop. ``</s>`` is only ever a label, never an input:
the batches are the seq2seq objective's, unchanged. Masks and labels come from the pure function
``prefix_lm_masks`` (brute-force leak tested).

Of ``objective.seq2seq`` this objective reads ``max_len`` (the decoder's length cap) and ``aligned_positions``
(target token j at position j, numbered like the source, as for seq2seq; the decoder follows the checkpoint); the
query-stream knobs (``order``, ``predict_fraction``, ``predict_sampling``, ``length_weight``, ``mass_weight``) do not
apply and must keep their defaults (``order`` may also say ``l2r``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from plmgen.batch import Batch
from plmgen.config import ModelConfig, ObjectiveConfig
from plmgen.errors import UserError
from plmgen.masks import content_mask

from .base import Objective, ObjectiveOutput, SpecialIds, combine, masked_ce
from .seq2seq import ORDER_IDS, target_ranks, with_aligned_positions


@dataclass
class PrefixLMMasks:
    content: Tensor  # [B, T, T] bool, True = may attend
    predicts: Tensor  # [B, T] bool: positions whose content state predicts the next token (<sep> and the target)
    labels: Tensor  # [B, T] long: the token after each position (eos after the last target token)


def prefix_lm_masks(input_ids: Tensor, target: Tensor, valid: Tensor, eos_id: int) -> PrefixLMMasks:
    """Masks and next-token labels of a ``[source <sep> target]`` batch (target [B, T] bool, valid [B, T] bool)."""
    tgt = target & valid
    l2r = torch.full((tgt.shape[0],), ORDER_IDS["l2r"], device=tgt.device)
    rank = target_ranks(tgt, l2r)  # source/<sep>/padding −1, target 0..L−1 left to right
    next_is_tgt = F.pad(tgt[:, 1:], (0, 1), value=False)  # [B, T] the token at t + 1 is a target token
    labels = torch.where(next_is_tgt, input_ids.roll(-1, dims=1), torch.full_like(input_ids, eos_id))
    return PrefixLMMasks(content=content_mask(rank, valid), predicts=tgt | next_is_tgt, labels=labels)


class PrefixLMObjective(Objective):
    """``prefix-lm``: next-token prediction on the target from the content stream under the prefix-LM mask."""

    name = "prefix-lm"
    query_stream = False
    uses_mems = False  # one pair per row, as seq2seq

    def __init__(self, cfg: ObjectiveConfig, model_cfg: ModelConfig, special: SpecialIds | None = None):
        super().__init__(cfg, model_cfg, special)
        if model_cfg.attn_type != "bi":
            raise UserError("objective prefix-lm needs model.attn_type bi (the source is bidirectional; the mask "
                            "makes the target causal)")
        self.s2s = cfg.seq2seq

    def sample(self, batch: Batch, generator: torch.Generator | None = None) -> PrefixLMMasks:
        return prefix_lm_masks(batch["input_ids"], batch["target"], batch["valid"], self.special.eos_id)

    def forward(self, model, batch: Batch, mems: list[Tensor] | None = None,
                generator: torch.Generator | None = None) -> ObjectiveOutput:
        ids = batch["input_ids"]
        m = self.sample(batch, generator)
        pos = with_aligned_positions(batch)["positions"] if self.s2s.aligned_positions else None
        out = model(ids, seg_ids=batch.get("seg_ids"), content_mask=m.content.to(ids.device), positions=pos)
        predicts = m.predicts.to(ids.device)
        logits = model.logits(out.h[predicts])  # [N, V]: only the predicting rows reach the LM head
        loss, n = masked_ce(logits, m.labels.to(ids.device)[predicts], torch.ones_like(predicts[predicts]),
                            self.cfg.seq2seq.label_smoothing)
        return combine({self.name: loss}, {self.name: 1.0}, {self.name: n}, None)


OBJECTIVE = PrefixLMObjective

__all__ = ["OBJECTIVE", "PrefixLMMasks", "PrefixLMObjective", "prefix_lm_masks"]
