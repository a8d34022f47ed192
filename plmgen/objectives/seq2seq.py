"""Seq2seq fine-tuning: predict the target of ``[source <sep> target]`` with the query stream along sampled orders.

Legend: B batch, T length, P predicted positions, d model dim, V vocab, L length classes.

Layout (COMMON.md): source and <sep> carry segment 0 and rank −1 (context: fully visible to each other and to the
target, never see it); the target carries segment 1 and a rank per token from a factorization order sampled per
example (``uniform`` random permutation, ``l2r``, ``r2l``, or a mix). *Every* target token keeps its rank, so the
content stream sees exactly what the incremental decoder will see (a filled slot sees the source and the slots
filled before it); with ``predict_fraction < 1`` only the last-ranked share is predicted, the earlier-ranked rest
acts as already-decoded context; ``predict_sampling uniform`` draws that share per example (Mask-Predict style). Masks come from the pure function ``seq2seq_masks`` (brute-force leak tested).

Extra terms, each with its weight: ``length`` (target-length head on the mean-pooled source content states) and
``mass`` (the registry's MASS span objective on each side of the pairs as monolingual text).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from plmgen.config import ModelConfig, ObjectiveConfig, Seq2SeqConfig, parse_order_mix
from plmgen.errors import UserError
from plmgen.length import LengthHead
from plmgen.masks import StreamMasks, perm_attention, target_positions

from .base import Objective, ObjectiveOutput, SpecialIds, combine, two_stream_loss
from .mass import MassObjective


# --- pure functions: orders -> ranks -> masks ----------------------------------------------------------------------

def sample_orders(spec: str, B: int, generator: torch.Generator | None = None) -> list[str]:
    """One order name per example, drawn from the mixture ``spec`` (e.g. ``"l2r:0.5,uniform:0.5"``)."""
    mix = parse_order_mix(spec)
    if len(mix) == 1:
        return [mix[0][0]] * B
    probs = torch.tensor([w for _, w in mix])
    idx = torch.multinomial(probs, B, replacement=True, generator=generator)
    return [mix[int(i)][0] for i in idx]


def target_ranks(target: Tensor, orders: list[str], generator: torch.Generator | None = None) -> Tensor:
    """target [B, T] bool -> rank [B, T] long: target tokens ranked 0..L−1 by each row's order, the rest −1."""
    B, T = target.shape
    rank = torch.full((B, T), -1, dtype=torch.long)
    for b in range(B):
        pos = target[b].nonzero().flatten().cpu()  # ascending positions
        L = pos.numel()
        if orders[b] == "l2r":
            r = torch.arange(L)
        elif orders[b] == "r2l":
            r = torch.arange(L - 1, -1, -1)
        elif orders[b] == "uniform":
            r = torch.randperm(L, generator=generator)
        else:
            raise ValueError(f"unknown order {orders[b]!r}")
        rank[b, pos] = r
    return rank.to(target.device)


def predicted_ranks(rank: Tensor, fraction: float, sampling: str = "fixed",
                    generator: torch.Generator | None = None) -> Tensor:
    """Keep only the last-ranked n target tokens of each row as predictions (others −1): n = ceil(fraction·L)
    (``fixed``), or drawn per row uniformly from 1..ceil(fraction·L) (``uniform``, Mask-Predict style)."""
    if fraction >= 1.0 and sampling == "fixed":
        return rank
    L = (rank >= 0).sum(1, keepdim=True)  # [B, 1]
    n_pred = torch.clamp(torch.ceil(L.double() * fraction - 1e-9).long(), min=1)  # 0.7·10 is 7, not 8
    if sampling == "uniform":
        u = torch.rand(n_pred.shape, generator=generator).to(n_pred.device)
        n_pred = torch.clamp((u * n_pred).long() + 1, max=n_pred)  # uniform on 1..n_pred
    keep = rank >= (L - n_pred)
    return torch.where(keep & (rank >= 0), rank, torch.full_like(rank, -1))


def seq2seq_masks(rank: Tensor, valid: Tensor, predict: Tensor) -> StreamMasks:
    """Masks of one seq2seq batch.

    rank [B, T] (−1 = source/<sep>/padding, 0.. = target order), valid [B, T] bool, predict [B, T] bool (target
    tokens whose loss is computed; a subset of rank >= 0). Context (rank −1) never sees a ranked token, so the
    source never sees the target; a target token sees the source and lower-ranked target tokens.
    """
    B, T = rank.shape
    perm = perm_attention(rank, valid)  # [B, T, T]
    eye = torch.eye(T, dtype=torch.bool, device=rank.device)[None]
    pred_rank = torch.where(predict, rank, torch.full_like(rank, -1))
    tpos, tvalid = target_positions(pred_rank)  # [B, P], sorted by rank
    query = torch.gather(perm, 1, tpos[:, :, None].expand(B, tpos.shape[1], T)) & tvalid[:, :, None]
    mapping = torch.zeros(B, tpos.shape[1], T, dtype=torch.bool, device=rank.device)
    mapping.scatter_(2, tpos[:, :, None], tvalid[:, :, None])
    return StreamMasks(content=perm | eye, query=query, target_pos=tpos, target_valid=tvalid, target_mapping=mapping)


def batch_masks(batch: dict, cfg: Seq2SeqConfig, generator: torch.Generator | None = None) -> tuple[Tensor, StreamMasks]:
    """Sample orders for a collated seq2seq batch -> (rank [B, T], masks)."""
    target = batch["target"] & batch["valid"]
    orders = sample_orders(cfg.order, target.shape[0], generator)
    rank = target_ranks(target, orders, generator)
    predict = predicted_ranks(rank, cfg.predict_fraction, cfg.predict_sampling, generator) >= 0
    return rank, seq2seq_masks(rank, batch["valid"], predict)


def mono_batch(batch: dict, sep_id: int, pad_id: int) -> dict:
    """Each side of each pair as its own monolingual row ([2B, T'] : sources, then targets), for the MASS term."""
    ids, valid, target = batch["input_ids"], batch["valid"], batch["target"]
    rows = []
    for b in range(ids.shape[0]):
        src = ids[b, : int(batch["src_len"][b])]
        tgt = ids[b][target[b] & valid[b]]
        rows.append(src)
        rows.append(tgt)
    rows = rows[0::2] + rows[1::2]
    T = max(int(r.numel()) for r in rows)
    out = torch.full((len(rows), T), pad_id, dtype=torch.long, device=ids.device)
    v = torch.zeros(len(rows), T, dtype=torch.bool, device=ids.device)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
        v[i, : r.numel()] = True
    return {"input_ids": out, "seg_ids": torch.zeros_like(out), "valid": v, "functional": ~v}


# --- the objective -----------------------------------------------------------------------------------------------------

class Seq2SeqObjective(Objective):
    """``seq2seq``: target tokens by the query stream along sampled orders + ``length`` (+ optional ``mass``)."""

    name = "seq2seq"
    uses_mems = False  # one pair per row; there is no text stream to carry memory along

    def __init__(self, cfg: ObjectiveConfig, model_cfg: ModelConfig, special: SpecialIds | None = None):
        super().__init__(cfg, model_cfg, special)
        if model_cfg.bi_data or model_cfg.attn_type != "bi":
            # bi_data would train half of each batch on reversed distances that decoding never uses; 'uni'
            # attention cannot see the whole source.
            raise UserError("objective seq2seq needs model.bi_data false and model.attn_type bi")
        self.s2s = cfg.seq2seq
        # Always present (cheap) so a checkpoint can answer `--length predict` with whatever it learned.
        self.length_head = LengthHead(model_cfg.d_model, self.s2s.max_len)
        self.mass = None
        if self.s2s.mass_weight > 0:
            self.mass = MassObjective(dataclasses.replace(cfg, name="mass", nsp_weight=0.0), model_cfg, self.special)

    def forward(self, model, batch: dict, mems: list[Tensor] | None = None,
                generator: torch.Generator | None = None) -> ObjectiveOutput:
        _, sm = batch_masks(batch, self.s2s, generator)
        out, loss, n = two_stream_loss(model, batch, sm, None)
        terms, weights, n_tokens = {self.name: loss}, {self.name: 1.0}, {self.name: n}
        if self.s2s.length_weight > 0:
            src = batch["valid"] & ~batch["target"] & ~batch["functional"]
            terms["length"] = self.length_head.loss(self.length_head(out.h, src), batch["tgt_len"].to(out.h.device))
            weights["length"], n_tokens["length"] = self.s2s.length_weight, int(batch["tgt_len"].shape[0])
        if self.mass is not None:
            mono = mono_batch(batch, self.special.sep_id, self.special.pad_id)
            m = self.mass(model, mono, None, generator)
            terms["mass"], weights["mass"], n_tokens["mass"] = m.terms["mass"], self.s2s.mass_weight, m.n_tokens["mass"]
        return combine(terms, weights, n_tokens, None)

    def predict_lengths(self, h: Tensor, src_mask: Tensor) -> Tensor:
        """Length logits [B, L] from content states h [B, T, d] of the source positions src_mask [B, T]."""
        return self.length_head(h, src_mask)


OBJECTIVE = Seq2SeqObjective
