"""``mask-plm``: permutation LM without a query stream, ``<mask>`` at the targets, order in the attention mask.

Legend: B batch, T length, P predicted positions (static, as ``plm``), L = T + 2P rows, J = T + P keys, M memory,
d model dim, V vocab.

The seed article's alternative to two-stream attention: a single stream in which the predicted positions are
``[MASK]`` placeholders, predicted autoregressively in a random order (the order living in the attention mask, not
in a second stream). That is what the model computes; how it is computed is not one stream of T rows but one
attention pass over three row groups (A, C, Q below), because a single row per target cannot be both the ``<mask>``
query and the true-token key later targets read. Compared with ``plm``: the same targets and order, the same
backbone; the difference is that the query is a ``<mask>`` *token* at the target's position (Q rows, with A's
``<mask>`` rows as context for every not-yet-predicted target) instead of a learned query-stream vector. Like ``plm``,
with a small ``perm_size`` most target pairs are predicted left to right (see plm.py).

Targets and their order are sampled exactly as for ``plm`` (``plm.plm_order``). The prediction of target t
(rank r) must see the context, the *true* tokens of the targets ranked before it and ``<mask>`` for the rest. One row cannot be both a ``<mask>`` query and the true-token key that
later targets read, and a ``<mask>`` row that later targets read must not itself have seen anything t may not
(else it leaks through the layers). So every target appears three times, each row a real token embedding at the
target's own (explicit) position:

    A  [T rows]  the sequence with <mask> at every target; sees all of A (valid) — never a true target token
    C  [P rows]  the true token of each target; sees A, itself and the C rows of lower rank
    Q  [P rows]  <mask> at each target; sees A and the C rows of lower rank; the LM loss is read here

Keys are A and C only (Q rows are never read), so the prediction of t sees exactly the context, ``<mask>`` at every
target (the A rows) and the true tokens ranked before t — and, transitively, nothing more: A never sees C, a C row
sees only lower-ranked C rows. ``mask_plm_layout`` is the pure function (leak-tested by a reachability closure);
``rows_forward`` runs the backbone on explicit positions through ``XLNet.run`` (``XLNet.forward`` places content
rows at 0..T−1, which the C rows cannot use). Memory caches the A rows (``<mask>`` included, as in ``dae``); the reuse rule
applies by position; ``attn_type: uni`` is not applied (the mask is the whole attention pattern here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from plmgen.batch import Batch
from plmgen.config import ObjectiveConfig
from plmgen.masks import target_positions
from plmgen.model import Rows

from .base import Objective, ObjectiveOutput, SpecialIds, block_reuse, masked_ce, stream_settings
from .plm import num_predict_cap, plm_order


@dataclass
class MaskPLMLayout:
    input_ids: Tensor  # [B, L] rows A ; C ; Q
    pos: Tensor  # [B, L] position of each row in the segment
    seg_ids: Tensor | None  # [B, L]
    mask: Tensor  # [B, L, J] bool, True = row may attend key (keys = the first J rows)
    rank: Tensor  # [B, T] the factorization order (−1 context)
    target_pos: Tensor  # [B, P]
    target_valid: Tensor  # [B, P]
    T: int
    P: int


def mask_plm_layout(batch: Batch, cfg: ObjectiveConfig, special: SpecialIds,
                    generator: torch.Generator | None = None) -> MaskPLMLayout:
    """The pure function of ``mask-plm``: sample targets and order as ``plm`` does, then lay out the rows."""
    rank, _, R = plm_order(batch, cfg, generator)
    P = num_predict_cap(rank.shape[1], R, cfg)
    return layout_from_order(batch["input_ids"], batch["valid"], batch.get("seg_ids"), rank, R, P, special)


def layout_from_order(ids: Tensor, valid: Tensor, seg: Tensor | None, rank: Tensor, R: int, P: int,
                      special: SpecialIds) -> MaskPLMLayout:
    """Rows A ; C ; Q and their mask for a given order rank [B, T] (reuse length R, P prediction rows)."""
    B, T = ids.shape
    dev = ids.device
    tpos, tvalid = target_positions(rank, P)  # [B, P] by rank
    is_tgt = rank >= 0
    a_ids = torch.where(is_tgt, special.mask_id, ids)
    c_ids = torch.where(tvalid, torch.gather(ids, 1, tpos), special.pad_id)
    q_ids = torch.full_like(c_ids, special.mask_id)
    pos = torch.cat([torch.arange(T, device=dev).expand(B, T), tpos, tpos], dim=1)  # [B, L]
    if seg is not None:
        seg = torch.cat([seg, torch.gather(seg, 1, tpos), torch.gather(seg, 1, tpos)], dim=1)

    r = torch.gather(rank, 1, tpos)  # [B, P] rank of each target row
    earlier = (r[:, None, :] < r[:, :, None]) & tvalid[:, None, :]  # [B, P(row), P(key)]
    eye_t = torch.eye(T, dtype=torch.bool, device=dev)[None]
    eye_p = torch.eye(P, dtype=torch.bool, device=dev)[None] & tvalid[:, None, :]
    sees_a = valid[:, None, :].expand(B, P, T)
    a_rows = torch.cat([valid[:, None, :] | eye_t, torch.zeros(B, T, P, dtype=torch.bool, device=dev)], dim=2)
    c_rows = torch.cat([sees_a, earlier | eye_p], dim=2)
    q_rows = torch.cat([sees_a, earlier], dim=2)
    mask = torch.cat([a_rows, c_rows, q_rows], dim=1)  # [B, L, J]
    k_valid = torch.cat([valid, tvalid], dim=1)
    mask = block_reuse(mask, pos, pos[:, : T + P], k_valid, R)
    return MaskPLMLayout(input_ids=torch.cat([a_ids, c_ids, q_ids], dim=1), pos=pos, seg_ids=seg, mask=mask,
                         rank=rank, target_pos=tpos, target_valid=tvalid, T=T, P=P)


def rows_forward(model, lay: MaskPLMLayout, mems: list[Tensor] | None = None, bi_data: bool = False,
                 reuse_len: int = 0) -> tuple[Tensor, list[Tensor] | None]:
    """The backbone over rows at explicit positions (``XLNet.run``) -> (final rows [B, L, d], new memory of the
    A rows: the first ``reuse_len`` of them, or all). Keys are the A and C rows; memory is visible to every row."""
    dev = next(model.parameters()).device
    ids, pos, mask = lay.input_ids.to(dev), lay.pos.to(dev), lay.mask.to(dev)
    B, L = ids.shape
    M = mems[0].shape[1] if mems else 0
    if M:
        mask = torch.cat([torch.ones(B, L, M, dtype=torch.bool, device=dev), mask], dim=2)
    seg = None if lay.seg_ids is None else lay.seg_ids.to(dev)
    n_mem = min(reuse_len, lay.T) if reuse_len > 0 else lay.T
    out = model.run(Rows(ids, pos, seg, mask, n_keys=lay.T + lay.P, n_mem=n_mem), mems, bi_data=bi_data)
    return out.h, out.mems


class MaskPLMObjective(Objective):
    name = "mask-plm"
    query_stream = False
    uses_mems = True

    def sample(self, batch: Batch, generator: torch.Generator | None = None) -> MaskPLMLayout:
        return mask_plm_layout(batch, self.cfg, self.special, generator)

    def forward(self, model, batch: Batch, mems=None, generator=None) -> ObjectiveOutput:
        lay = self.sample(batch, generator)
        rows, new_mems = rows_forward(model, lay, mems, **stream_settings(batch))
        ids = batch["input_ids"]
        tpos, tvalid = lay.target_pos, lay.target_valid
        q = rows[:, lay.T + lay.P :]  # [B, P, d] the Q rows
        loss, n = masked_ce(model.logits(q), torch.gather(ids, 1, tpos), tvalid)
        return self.output(loss, n, rows[:, : lay.T], batch, new_mems)


OBJECTIVE = MaskPLMObjective
