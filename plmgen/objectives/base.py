"""The objective interface, its output, and the pieces every objective shares.

Legend: B batch, T length, M memory, P predicted positions, I query rows, J keys, V vocab, d model dim.
Masks are bool, True = may attend.

An objective wraps the backbone: it samples *what* is predicted and in *which order* with a pure function of
(batch, generator) — so tests can re-derive every mask by brute force — then runs the model and returns named,
unweighted loss terms with their weights. The batch keys are listed where they are made (``plmgen.data.pretrain``,
``plmgen.data.parallel``).

Samplers are tensor code on the batch's device: no host read (``.cpu()``, ``.item()``, ``.tolist()``, ``bool(t)``,
boolean indexing) and no Python loop over rows, so a GPU step never waits for the host (tests/objectives/
test_device.py runs every objective under a mode that refuses host reads). Shapes stay static where the batch
does not say otherwise (P is a cap computed from T), so nothing needs a device value to size a tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmgen.batch import Batch
from plmgen.config import ModelConfig, ObjectiveConfig
from plmgen.masks import StreamMasks, stream_masks

from .nsp import NSPHead, nsp_loss


@dataclass(frozen=True)
class SpecialIds:
    """Token ids an objective needs (defaults = plmgen.tokenizer's fixed special ids)."""

    mask_id: int = 6
    pad_id: int = 5
    cls_id: int = 3
    sep_id: int = 4
    eos_id: int = 2  # </s>: the prefix LM's stop label
    empty_id: int = 8  # <eop>: the label of an empty target slot (seq2seq ``empty_slots``)
    first_normal_id: int = 9  # random replacement tokens (DAE) are drawn from [first_normal_id, vocab_size)

    @classmethod
    def from_tokenizer(cls, tok) -> "SpecialIds":
        return cls(mask_id=tok.mask_id, pad_id=tok.pad_id, cls_id=tok.cls_id, sep_id=tok.sep_id, eos_id=tok.eos_id,
                   empty_id=tok.empty_id)


@dataclass
class ObjectiveOutput:
    loss: Tensor  # weighted total (scalar)
    terms: dict[str, Tensor]  # named, unweighted loss terms
    weights: dict[str, float]  # weight of each term in `loss`
    n_tokens: dict[str, int | Tensor]  # predicted tokens (or rows, for nsp) per term; tensors stay on the device
    mems: list[Tensor] | None  # new memory (detached) or None


def combine(terms: dict[str, Tensor], weights: dict[str, float], n_tokens: dict[str, int],
            mems: list[Tensor] | None) -> ObjectiveOutput:
    """loss = Σ weight·term, the one place a total is formed."""
    loss = sum(weights[k] * terms[k] for k in terms)
    return ObjectiveOutput(loss=loss, terms=terms, weights=weights, n_tokens=n_tokens, mems=mems)


class Objective(nn.Module):
    """Base class: ``forward(model, batch, mems, generator) -> ObjectiveOutput``. Owns the optional NSP head."""

    name: ClassVar[str] = ""
    uses_mems: bool = False
    # False: the objective never runs the query stream, so the backbone's mask_emb (its first state) gets no
    # gradient; PLMModule freezes it then (DDP refuses parameters that take no part in the loss).
    query_stream: ClassVar[bool] = True

    def __init__(self, cfg: ObjectiveConfig, model_cfg: ModelConfig, special: SpecialIds | None = None):
        super().__init__()
        self.cfg, self.model_cfg = cfg, model_cfg
        self.special = special or SpecialIds()
        self.nsp = NSPHead(model_cfg.d_model) if cfg.nsp_weight > 0 else None

    def forward(self, model, batch: Batch, mems: list[Tensor] | None = None,
                generator: torch.Generator | None = None) -> ObjectiveOutput:
        raise NotImplementedError

    def sample(self, batch: Batch, generator: torch.Generator | None = None):
        """What the step draws before the backbone runs (masks, orders, corruption); ``bench train`` times it."""
        raise NotImplementedError

    def output(self, loss: Tensor, n: int, h: Tensor, batch: Batch, mems: list[Tensor] | None) -> ObjectiveOutput:
        """The objective's own term (+ the NSP term on the content states h [B, T, d] when enabled)."""
        terms, weights, n_tokens = {self.name: loss}, {self.name: 1.0}, {self.name: n}
        if self.nsp is not None:
            terms["nsp"], n_tokens["nsp"] = nsp_loss(self.nsp, h, batch)
            weights["nsp"] = self.cfg.nsp_weight
        return combine(terms, weights, n_tokens, mems if self.uses_mems else None)


class TwoStreamObjective(Objective):
    """An objective that samples a factorization order and scores XLNet's query stream at its targets."""

    uses_mems = True

    def forward(self, model, batch: Batch, mems=None, generator=None) -> ObjectiveOutput:
        out, loss, n = two_stream_loss(model, batch, self.sample(batch, generator), mems)
        return self.output(loss, n, out.h, batch, out.mems)


# --- shared helpers ---------------------------------------------------------------------------------------------------

def masked_ce(logits: Tensor, labels: Tensor, valid: Tensor, smoothing: float = 0.0) -> tuple[Tensor, int]:
    """Mean cross-entropy over the valid entries -> (loss, count). logits [.., V], labels/valid [..];
    ``smoothing`` > 0: label-smoothed cross-entropy (that share of the target mass spread over the vocabulary).

    Computed in fp32 (bf16 logits lose the small differences the loss is made of). With no valid entry the loss is
    a zero that still carries a graph, so a step never breaks on an empty batch. The count is a 0-dim tensor on the
    device (reading it would make the host wait for the step).
    """
    return masked_nll(F.log_softmax(logits.float(), dim=-1), labels, valid, smoothing)


def masked_nll(logp: Tensor, labels: Tensor, valid: Tensor, smoothing: float = 0.0,
               label_logp: Tensor | None = None) -> tuple[Tensor, int]:
    """``masked_ce`` from log-probabilities [.., V] already computed (a caller that needs them for another term
    too skips a second log-softmax over the vocabulary, the largest cost of a small model's step); ``label_logp``
    [..]: the labels' entries of ``logp`` when the caller gathered them already."""
    nll = -(logp.gather(-1, labels[..., None])[..., 0] if label_logp is None else label_logp)
    if smoothing > 0:  # torch's label_smoothing: (1 − ε)·nll + ε·mean over the vocabulary of −log p
        nll = (1 - smoothing) * nll - smoothing * logp.mean(-1)
    w = valid.to(nll.dtype)
    n = valid.sum()
    return (nll * w).sum() / n.clamp_min(1), n


def eligible(batch: Batch) -> Tensor:
    """[B, T] bool: tokens that may be predicted (valid and not functional: SEP/CLS/padding never are)."""
    valid = batch["valid"]
    functional = batch.get("functional")
    return valid if functional is None else valid & ~functional


def reuse_len_of(batch: Batch) -> int:
    """The batch's reuse length (0 = none), checked against its length."""
    R = int(batch.get("reuse_len") or 0)
    T = batch["input_ids"].shape[1]
    if not 0 <= R < T:
        raise ValueError(f"batch reuse_len={R} must be in [0, T={T})")
    return R


def block_reuse(mask: Tensor, q_pos: Tensor, k_pos: Tensor, k_valid: Tensor, reuse_len: int) -> Tensor:
    """Apply the reference's reuse rule to a mask [B, I, J] whose rows/keys sit at positions q_pos [B|1, I], k_pos.

    Rows in the reuse part (pos < reuse_len) see no key outside it: their states are cached as memory for the next
    segment, whose text overlaps the rest of this one. Rows after it see every valid reuse key (the reuse part comes
    first in the factorization order). k_valid [B, J] marks real keys.
    """
    if reuse_len <= 0:
        return mask
    q_in = (q_pos < reuse_len)[:, :, None]  # [B|1, I, 1]
    k_in = (k_pos < reuse_len)[:, None, :]  # [B|1, 1, J]
    rest_sees_reuse = k_in & k_valid[:, None, :]
    return torch.where(q_in, mask & k_in, torch.where(k_in, rest_sees_reuse, mask))


def order_masks(rank: Tensor, valid: Tensor, num_predict: int, reuse_len: int = 0) -> StreamMasks:
    """``masks.stream_masks`` for rank [B, T] with a static P = num_predict, plus the reuse rule.

    A prediction that may see nothing (e.g. the first-ranked target of a reuse part that holds no context) is not
    scored: its attention row would be fully masked, and a fully masked row attends *uniformly to every key* —
    its own token included. Such rows get target_valid False (with memory they would be fine, but the masks do
    not depend on it).
    """
    sm = stream_masks(rank, valid, num_predict)
    content, query = sm.content, sm.query
    if reuse_len > 0:
        pos = torch.arange(rank.shape[1], device=rank.device)[None]
        content = block_reuse(content, pos, pos, valid, reuse_len)
        query = block_reuse(query, sm.target_pos, pos, valid, reuse_len) & sm.target_valid[:, :, None]
    tvalid = sm.target_valid & query.any(-1)
    return replace(sm, content=content, query=query & tvalid[:, :, None], target_valid=tvalid,
                   target_mapping=sm.target_mapping & tvalid[:, :, None])


def stream_settings(batch: Batch) -> dict:
    """What a pre-training batch tells the backbone about its text streams: ``XLNet.forward``'s ``bi_data`` (the
    second half of the rows reads backward), ``reuse_len`` (only that many leading positions become memory) and,
    when a layout numbers its tokens otherwise than 0..T−1, their ``positions``."""
    out = {"bi_data": bool(batch.get("bi_backward", False)), "reuse_len": reuse_len_of(batch)}
    if batch.get("positions") is not None:
        out["positions"] = batch["positions"]
    return out


def two_stream_logits(model, batch: Batch, sm: StreamMasks, mems: list[Tensor] | None):
    """Run the two-stream model with masks sm -> (out, query-stream logits [B, P, V], labels [B, P])."""
    ids = batch["input_ids"]
    out = model(ids, seg_ids=batch.get("seg_ids"), content_mask=sm.content, query_mask=sm.query,
                target_pos=sm.target_pos, mems=mems, **stream_settings(batch))
    return out, model.logits(out.g), torch.gather(ids, 1, sm.target_pos)


def two_stream_loss(model, batch: Batch, sm: StreamMasks, mems: list[Tensor] | None, smoothing: float = 0.0):
    """Run the two-stream model with masks sm and score the query stream at sm.target_pos -> (out, loss, n)."""
    out, logits, labels = two_stream_logits(model, batch, sm, mems)
    loss, n = masked_ce(logits, labels, sm.target_valid, smoothing)
    return out, loss, n


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    """U[0, 1) on ``device``, the one source of randomness of every sampler.

    Without a generator (training) the draws come from torch's default generator *of that device*, which
    PLMModule seeds per step: nothing crosses to the host. A generator (tests) draws on its own device and the
    draws are moved, so a CPU generator's seed means the same masks on every device.
    """
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def rank_of(key: Tensor) -> Tensor:
    """[B, n] -> [B, n] long: each entry's place in its row's ascending order (a random key gives a random
    permutation; ties cannot occur with continuous keys)."""
    return torch.argsort(torch.argsort(key, dim=1), dim=1)
