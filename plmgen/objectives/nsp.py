"""Next-sentence prediction head on ``<cls>`` (the paper's "+next-sent pred" ablation row; off by default).

Legend: B batch, T length, d model dim.

Enabled on an objective by ``ObjectiveConfig.nsp_weight > 0``: the objective adds the term ``nsp`` (cross-entropy of
"B follows A", ``batch["is_next"]``) read from the final content state of ``<cls>``. The head follows XLNet's
sequence summary (last token, dense + tanh projection, then a 2-way classifier).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmgen.batch import Batch
from plmgen.errors import UserError

CLS_SEGMENT = 2  # the pipeline's segment id of <cls> ([A <sep> B <sep> <cls>] -> 0.. 1.. 2)


class NSPHead(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, 2)

    def forward(self, h_cls: Tensor) -> Tensor:
        """[B, d] -> [B, 2] logits (index 1 = B is the true next text)."""
        return self.out(torch.tanh(self.proj(h_cls)))


def cls_positions(batch: Batch) -> Tensor:
    """[B] position of <cls>: ``batch["cls_pos"]`` if given, else the last valid position whose segment id is 2."""
    if "cls_pos" in batch:
        return batch["cls_pos"].long()
    seg, valid = batch.get("seg_ids"), batch["valid"]
    if seg is None:
        raise UserError("objective.nsp_weight > 0 needs batches with seg_ids (a <cls> with segment id 2) or cls_pos")
    is_cls = (seg == CLS_SEGMENT) & valid
    if not bool(is_cls.any(1).all()):
        raise UserError("objective.nsp_weight > 0 needs a <cls> (segment id 2) in every row; use data.ab_layout: true")
    T = seg.shape[1]
    idx = torch.arange(T, device=seg.device).expand_as(seg)
    return torch.where(is_cls, idx, torch.full_like(idx, -1)).max(1).values


def nsp_loss(head: NSPHead, h: Tensor, batch: Batch) -> tuple[Tensor, int]:
    """Mean NSP cross-entropy over the batch from content states h [B, T, d] -> (loss, number of rows)."""
    if "is_next" not in batch:
        raise UserError("objective.nsp_weight > 0 needs batches with is_next labels (the pretrain pipeline's A/B layout)")
    pos = cls_positions(batch)
    h_cls = h[torch.arange(h.shape[0], device=h.device), pos]  # [B, d]
    logits = head(h_cls).float()
    return F.cross_entropy(logits, batch["is_next"].long()), int(h.shape[0])
