"""Seq2seq fine-tuning: predict the target of ``[source <sep> target]`` with the query stream along sampled orders.

Legend: B batch, T length, P predicted positions, d model dim, V vocab, L length classes.

Layout (``plmgen.data.parallel``): source and <sep> carry segment 0 and rank −1 (context: fully visible to each other and to the
target, never see it); the target carries segment 1 and a rank per token from a factorization order sampled per
example (``uniform`` random permutation, ``l2r``, ``r2l``, ``local`` (left to right with jitter), or a mix).
*Every* target token keeps its rank, so the content stream sees exactly what the incremental decoder will see (a
filled slot sees the source and the slots
filled before it); with ``predict_fraction < 1`` only the last-ranked share is predicted, the earlier-ranked rest
acts as already-decoded context; ``predict_sampling uniform`` draws that share per example (Mask-Predict style). Masks come from the pure function ``seq2seq_masks`` (brute-force leak tested).

``end_marker``: a ``</s>`` right after the last target token (``[source <sep> target </s>]``, segment 1, rank −1)
that the target tokens and the query stream see and the source and <sep> do not. Positions are relative, so
without it a target slot cannot tell how many slots follow: the decoder fills the length the length head chose,
but the model writes as if the sentence went on (left to right, most outputs stopped mid-sentence). The source
never sees the marker, so the length head (on source states) cannot read the length from it, and the decoder can
predict the length before it places the marker.

``empty_slots`` = N > 0: before the marker, each target gets n ~ U{0..N} extra slots at uniformly random places,
labelled with the empty token (``with_empty_slots``); the length head still learns the real length. The decoder
gives a target the length head's number of slots and may fill any of them with the empty token, which the text
drops: a model that finished its translation in fewer slots than it was given can leave a slot empty instead of
repeating a word ("Minimum value value"), the loop that fixed-length filling otherwise forces.

Extra terms, each with its weight: ``length`` (target-length head on the mean-pooled source content states) and
``mass`` (the registry's MASS span objective on each side of the pairs as monolingual text).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from plmgen.batch import Batch
from plmgen.config import ModelConfig, ObjectiveConfig, Seq2SeqConfig, parse_order_mix
from plmgen.errors import UserError
from plmgen.length import LengthHead
from plmgen.masks import StreamMasks, perm_attention, target_positions

from .base import (Objective, ObjectiveOutput, SpecialIds, combine, masked_nll, rank_of, two_stream_logits,
                   uniform)
from .mass import MassObjective


# --- pure functions: orders -> ranks -> masks ----------------------------------------------------------------------

ORDER_IDS = {"l2r": 0, "r2l": 1, "uniform": 2, "local": 3, "ends": 4}  # per-row order code (``sample_orders``/``target_ranks``)


def sample_orders(spec: str, B: int, generator: torch.Generator | None = None, device=None) -> Tensor:
    """[B] long: one order code (``ORDER_IDS``) per example, drawn from the mixture ``spec`` (e.g.
    ``"l2r:0.5,uniform:0.5"``) on ``device``."""
    mix = parse_order_mix(spec)
    u = uniform((B,), generator, device)
    codes = torch.full((B,), ORDER_IDS[mix[0][0]], dtype=torch.long, device=device)
    cum = 0.0
    for (_, w), (name, _) in zip(mix, mix[1:]):  # scalars only: no host data is copied to the device
        cum += w
        codes = torch.where(u >= cum, ORDER_IDS[name], codes)
    return codes


def target_ranks(target: Tensor, orders: Tensor, generator: torch.Generator | None = None,
                 local_width: float = 3.0, ends: bool = False) -> Tensor:
    """target [B, T] bool, orders [B] codes -> rank [B, T] long: target tokens ranked 0..L−1 by each row's order
    (l2r, r2l, a uniformly random permutation, local: by j + local_width·u, or ends: see :func:`ends_keys`), the
    rest −1. ``ends``: the mixture may hold ends rows (only then are their random numbers drawn, so the other
    orders' draws do not change)."""
    B, T = target.shape
    j = torch.cumsum(target.long(), 1) - 1  # place of each target token, left to right
    L = target.sum(1, keepdim=True)
    u = uniform((B, T), generator, target.device)
    o = orders[:, None]
    key = torch.where(o == ORDER_IDS["local"], j + local_width * u, u)  # uniform: a random key per slot
    if ends:
        key = torch.where(o == ORDER_IDS["ends"], ends_keys(target, j, L, generator), key)
    shuffled = rank_of(torch.where(target, key, float("inf")))  # targets first
    rank = torch.where(o == ORDER_IDS["l2r"], j, torch.where(o == ORDER_IDS["r2l"], L - 1 - j, shuffled))
    return torch.where(target, rank, -1)


def ends_keys(target: Tensor, j: Tensor, L: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Keys [B, T] of the ``ends`` order: a split s ~ U{0..L} per row; the slots left of it are filled left to right,
    the others right to left, the two runs interleaved at random (arrival times of two Poisson processes: the next
    slot comes from either end with probability 1/2 while both have slots). Every prefix of the order is a prefix
    plus a suffix of the target: the states an adaptive decoder reaches when it writes the end of the sentence early
    and then has to bridge the middle."""
    split = (uniform(tuple(L.shape), generator, target.device) * (L + 1)).floor()  # [B, 1] in 0..L
    left = target & (j < split)
    gap = -torch.log1p(-uniform(tuple(target.shape), generator, target.device))  # Exp(1) gaps
    from_left = torch.cumsum(gap * left, 1)
    from_right = torch.cumsum((gap * (target & ~left)).flip(1), 1).flip(1)
    return torch.where(left, from_left, from_right)


def predicted_ranks(rank: Tensor, fraction: float, sampling: str = "fixed",
                    generator: torch.Generator | None = None) -> Tensor:
    """Keep only the last-ranked n target tokens of each row as predictions (others −1): n = ceil(fraction·L)
    (``fixed``), or drawn per row uniformly from 1..ceil(fraction·L) (``uniform``, Mask-Predict style)."""
    if fraction >= 1.0 and sampling == "fixed":
        return rank
    L = (rank >= 0).sum(1, keepdim=True)  # [B, 1]
    n_pred = torch.clamp(torch.ceil(L.double() * fraction - 1e-9).long(), min=1)  # 0.7·10 is 7, not 8
    if sampling == "uniform":
        u = uniform(n_pred.shape, generator, n_pred.device)
        n_pred = torch.clamp((u * n_pred).long() + 1, max=n_pred)  # uniform on 1..n_pred
    keep = rank >= (L - n_pred)
    return torch.where(keep & (rank >= 0), rank, torch.full_like(rank, -1))


def seq2seq_masks(rank: Tensor, valid: Tensor, predict: Tensor, num_predict: int | None = None,
                  end: Tensor | None = None) -> StreamMasks:
    """Masks of one seq2seq batch.

    rank [B, T] (−1 = source/<sep>/padding, 0.. = target order), valid [B, T] bool, predict [B, T] bool (target
    tokens whose loss is computed; a subset of rank >= 0). Context (rank −1) never sees a ranked token, so the
    source never sees the target; a target token sees the source and lower-ranked target tokens. num_predict:
    P, at least the most predictions of a row (None: read from the device). end [B, T] bool (optional): the
    end-marker column (rank −1): seen by the target tokens and itself, never by the rest of the context.
    """
    B, T = rank.shape
    perm = perm_attention(rank, valid)  # [B, T, T]
    if end is not None:  # other context rows do not see the marker
        perm = perm & ~(end[:, None, :] & (rank < 0)[:, :, None] & ~end[:, :, None])
    eye = torch.eye(T, dtype=torch.bool, device=rank.device)[None]
    pred_rank = torch.where(predict, rank, torch.full_like(rank, -1))
    tpos, tvalid = target_positions(pred_rank, num_predict)  # [B, P], sorted by rank
    query = torch.gather(perm, 1, tpos[:, :, None].expand(B, tpos.shape[1], T)) & tvalid[:, :, None]
    mapping = torch.zeros(B, tpos.shape[1], T, dtype=torch.bool, device=rank.device)
    mapping.scatter_(2, tpos[:, :, None], tvalid[:, :, None])
    return StreamMasks(content=perm | eye, query=query, target_pos=tpos, target_valid=tvalid, target_mapping=mapping)


def batch_masks(batch: Batch, cfg: Seq2SeqConfig, generator: torch.Generator | None = None) -> tuple[Tensor, StreamMasks]:
    """Sample orders for a collated seq2seq batch (``with_end_marker``'s when cfg.end_marker) -> (rank [B, T], masks)."""
    target = batch["target"] & batch["valid"]
    orders = sample_orders(cfg.order, target.shape[0], generator, target.device)
    ends = any(name == "ends" for name, _ in parse_order_mix(cfg.order))
    rank = target_ranks(target, orders, generator, cfg.local_width, ends)
    predict = predicted_ranks(rank, cfg.predict_fraction, cfg.predict_sampling, generator) >= 0
    return rank, seq2seq_masks(rank, batch["valid"], predict, batch.get("tgt_len_max"), batch.get("end"))


def with_end_marker(batch: Batch, end_id: int, pad_id: int) -> Batch:
    """The batch with ``end_id`` right after each row's target (one more column; ``end`` [B, T+1] marks it).
    The marker is valid, segment 1, functional (never predicted) and not a target token."""
    ids = batch["input_ids"]
    B, T = ids.shape
    col = (batch["src_len"] + 1 + batch["tgt_len"]).to(ids.device)[:, None]  # [B, 1]
    end = torch.arange(T + 1, device=ids.device)[None] == col  # [B, T+1]

    def grow(x: Tensor, fill) -> Tensor:
        return torch.cat([x, torch.full_like(x[:, :1], fill)], dim=1)

    out = dict(batch)
    out["input_ids"] = torch.where(end, end_id, grow(ids, pad_id))
    out["seg_ids"] = torch.where(end, 1, grow(batch["seg_ids"], 0))
    out["valid"] = grow(batch["valid"], False) | end
    out["functional"] = grow(batch["functional"], True)  # the marker too: never predicted, not a source token
    out["target"] = grow(batch["target"], False)
    out["end"] = end
    return out


def with_aligned_positions(batch: Batch) -> Batch:
    """The batch with ``positions`` [B, T]: source tokens and <sep> at 0..S, then everything after <sep> (target
    slots, empty slots, the end marker, padding) from 0 again (``Seq2SeqConfig.aligned_positions``)."""
    ids = batch["input_ids"]
    col = torch.arange(ids.shape[1], device=ids.device)[None]  # [1, T]
    start = batch["src_len"].to(ids.device)[:, None] + 1  # [B, 1] the first column after <sep>
    return {**batch, "positions": torch.where(col < start, col, col - start)}


def with_empty_slots(batch: Batch, n_max: int, empty_id: int, pad_id: int,
                     generator: torch.Generator | None = None, end_share: float = 0.0) -> Batch:
    """The batch with n ~ U{0..n_max} empty slots per row at uniformly random places of its target ([B, T + n_max]),
    or after its last token (each row with probability ``end_share``: 0 none, 1 every row, without a draw).

    Slot j of a row's new target (length L + n) is empty when its uniform draw is among the row's n smallest (at
    the end: when j >= L), else it holds the next original target token, so dropping the empty slots gives the original
    target back. Sources
    and <sep> are kept; ``tgt_len`` becomes L + n (the length head's label stays the collated batch's); draws come
    from :func:`uniform` on the batch's device (``generator``: tests) and only host ints size the tensors.
    """
    ids = batch["input_ids"]
    B, T = ids.shape
    dev = ids.device
    S, L = batch["src_len"].to(dev)[:, None], batch["tgt_len"].to(dev)[:, None]  # [B, 1]
    Lm = batch.get("tgt_len_max", T) + n_max  # bound on the new target lengths
    n = (uniform((B, 1), generator, dev) * (n_max + 1)).long().clamp(max=n_max)  # U{0..n_max}
    u = uniform((B, Lm), generator, dev)
    j = torch.arange(Lm, device=dev)[None]
    u = torch.where(j < L + n, u, 2.0)  # slots past the new length are never empty
    empty = u.argsort(1).argsort(1) < n  # [B, Lm] the n smallest draws
    if end_share >= 1:
        empty = (j >= L) & (j < L + n)
    elif end_share > 0:  # a share of the rows: one more draw per row
        empty = torch.where(uniform((B, 1), generator, dev) < end_share, (j >= L) & (j < L + n), empty)
    src_col = (S + 1 + j - empty.long().cumsum(1)).clamp(max=T - 1)  # the original column a kept slot reads
    c = torch.arange(T + n_max, device=dev)[None]
    slot = (c - S - 1).clamp(0, Lm - 1)  # [B, T + n_max] the target slot of column c
    is_tgt = (c > S) & (c <= S + L + n)
    valid = c <= S + L + n
    tgt_tok = torch.where(empty.gather(1, slot), empty_id, ids.gather(1, src_col.gather(1, slot)))
    grown = torch.cat([ids, ids.new_full((B, n_max), pad_id)], 1)
    out = dict(batch)
    out["input_ids"] = torch.where(is_tgt, tgt_tok, torch.where(valid, grown, pad_id))
    out["seg_ids"] = is_tgt.long()
    out["valid"] = valid
    out["functional"] = (c == S) | ~valid
    out["target"] = is_tgt
    out["tgt_len"], out["tgt_len_max"] = (L + n)[:, 0], Lm
    return out


def neighbour_candidates(labels: Tensor, ids: Tensor, target: Tensor, sm: StreamMasks,
                         skip: Tensor | None = None, window: int = 1, unseen: bool = False) -> tuple[Tensor, Tensor]:
    """The visible neighbours' tokens of every prediction -> (tokens, counts) [B, P, 2W] (slots p − W..p − 1,
    then p + 1..p + W).

    labels [B, P], ids/target [B, T]. A neighbour counts when it is a target token at target position p ∓ d
    (d ≤ ``window``) of prediction p, the prediction's query sees it (already decoded; with ``unseen`` also when it
    does not), it is not the label and,
    for window > 1, no nearer counted neighbour holds the same token (each distinct token once; window 1 counts
    both sides, as it always has). With ``skip`` [B, T] (the empty
    slots; window 1 only), the neighbours are the nearest target slots on each side that are not skipped: the word
    on the other side of an empty slot is the one a repetition would touch once the empty slot is dropped.
    """
    T = ids.shape[1]
    near = torch.cat([torch.arange(-window, 0, device=ids.device), torch.arange(1, window + 1, device=ids.device)])
    col = sm.target_pos[:, :, None] + near  # [B, P, 2W]
    if skip is not None:  # the nearest kept slot at or left of p − 1, at or right of p + 1
        near, c = _nearest_kept(target & ~skip), col.clamp(0, T - 1)
        col = torch.stack([torch.where(col[..., 0] >= 0, near[..., 0].gather(1, c[..., 0]), -1),
                           torch.where(col[..., 1] < T, near[..., 1].gather(1, c[..., 1]), T)], 2)
    inside = (col >= 0) & (col < T)
    col = col.clamp(0, T - 1).flatten(1)  # [B, 2P]
    cand = ids.gather(1, col).view_as(inside)
    seen = sm.query.gather(2, col.view(*inside.shape)) | unseen
    ok = sm.target_valid[:, :, None] & inside & target.gather(1, col).view_as(inside) & seen
    ok = ok & (cand != labels[:, :, None])
    if window > 1:  # each distinct token once: drop a candidate that a nearer counted one already holds
        dist, idx = near.abs(), torch.arange(len(near), device=ids.device)
        for k in range(cand.shape[-1]):
            nearer = (dist < dist[k]) | ((dist == dist[k]) & (idx < k))
            dup = (ok & nearer & (cand == cand[..., k : k + 1])).any(-1)
            ok[..., k] &= ~dup
    return cand, ok


def _nearest_kept(kept: Tensor) -> Tensor:
    """kept [B, T] bool -> [B, T, 2] long: for column c, the nearest kept column ≤ c (−1: none) and ≥ c
    (T: none)."""
    B, T = kept.shape
    idx = torch.arange(T, device=kept.device).expand(B, T)
    left = torch.where(kept, idx, -1).cummax(1).values
    right = torch.where(kept, idx, T).flip(1).cummin(1).values.flip(1)
    return torch.stack([left, right], 2)


def neighbour_unlikelihood(cand_logp: Tensor, ok: Tensor, target_valid: Tensor) -> tuple[Tensor, Tensor]:
    """Unlikelihood of the visible neighbours' tokens -> (loss summed over candidates / predictions, candidates).

    cand_logp [B, P, 2] fp32 log-probabilities of :func:`neighbour_candidates`' tokens at their predictions, ok
    [B, P, 2] which count, target_valid [B, P]; each candidate adds −log(1 − p(token)).
    """
    total = cand_logp.new_zeros(())
    for j in range(cand_logp.shape[-1]):  # left, then right: the order of the sums kept from the per-side loop
        p = cand_logp[:, :, j].exp()
        total = total + (-torch.log1p(-p.clamp(max=1 - 1e-6)) * ok[:, :, j]).sum()
    return total / target_valid.sum().clamp_min(1), ok.sum()


def mono_batch(batch: Batch, sep_id: int, pad_id: int) -> Batch:
    """Each side of each pair as its own monolingual row ([2B, W]: sources, then targets), for the MASS term.

    W = the longest side, from the batch's host-side ``src_len_max``/``tgt_len_max`` (the collate's), else T − 1.
    """
    ids, S, L = batch["input_ids"], batch["src_len"][:, None], batch["tgt_len"][:, None]
    T = ids.shape[1]
    W = max(batch.get("src_len_max", T - 1), batch.get("tgt_len_max", T - 1))
    j = torch.arange(W, device=ids.device)[None]
    src_ok, tgt_ok = j < S, j < L
    tgt = torch.gather(ids, 1, (S + 1 + j).clamp(max=T - 1))  # the target starts after <sep>
    out = torch.cat([torch.where(src_ok, ids[:, :W], pad_id), torch.where(tgt_ok, tgt, pad_id)])
    v = torch.cat([src_ok, tgt_ok])
    return {"input_ids": out, "seg_ids": torch.zeros_like(out), "valid": v, "functional": ~v}


# --- the objective -----------------------------------------------------------------------------------------------------

class Seq2SeqObjective(Objective):
    """``seq2seq``: target tokens by the query stream along sampled orders + ``length`` (+ optional ``mass``)."""

    name = "seq2seq"
    uses_mems = False  # one pair per row; there is no text stream to carry memory along

    def __init__(self, cfg: ObjectiveConfig, model_cfg: ModelConfig, special: SpecialIds | None = None):
        super().__init__(cfg, model_cfg, special)
        if model_cfg.attn_type != "bi":  # 'uni' attention cannot see the whole source
            raise UserError("objective seq2seq needs model.attn_type bi")
        self.s2s = cfg.seq2seq
        # Always present (cheap) so a checkpoint can answer `--length predict` with whatever it learned.
        self.length_head = LengthHead(model_cfg.d_model, self.s2s.max_len, offset=self.s2s.length_offset)
        self.mass = None
        if self.s2s.mass_weight > 0:
            self.mass = MassObjective(dataclasses.replace(cfg, name="mass", nsp_weight=0.0), model_cfg, self.special)

    def sample(self, batch: Batch, generator: torch.Generator | None = None) -> StreamMasks:
        """The seq2seq term's masks (the optional ``mass`` term samples its own) of ``self.prepare(batch)``."""
        return batch_masks(batch, self.s2s, generator)[1]

    def prepare(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """The batch the seq2seq term reads: the collated one, with empty slots and the end marker when configured."""
        if self.s2s.empty_slots:
            batch = with_empty_slots(batch, self.s2s.empty_slots, self.special.empty_id, self.special.pad_id, generator,
                                     {"random": 0.0, "end": 1.0, "mixed": 0.5}[self.s2s.empty_place])
        if self.s2s.end_marker:
            batch = with_end_marker(batch, self.special.eos_id, self.special.pad_id)
        return with_aligned_positions(batch) if self.s2s.aligned_positions else batch

    def forward(self, model, batch: Batch, mems: list[Tensor] | None = None,
                generator: torch.Generator | None = None) -> ObjectiveOutput:
        collated, batch = batch, self.prepare(batch, generator)
        sm = self.sample(batch, generator)
        out, logits, labels = two_stream_logits(model, batch, sm, None)
        logp = torch.log_softmax(logits.float(), dim=-1)  # [B, P, V] once, for both terms
        picked = None  # [B, P, 3] the labels' and both neighbours' log-probs, when the unlikelihood term is on
        if self.s2s.unlikelihood > 0:
            ids = batch["input_ids"]
            skip = ids == self.special.empty_id if self.s2s.unlikelihood_skip_empty else None
            cand, ok = neighbour_candidates(labels, ids, batch["target"] & batch["valid"], sm, skip,
                                            self.s2s.unlikelihood_window, self.s2s.unlikelihood_unseen)
            ok = ok & (cand != self.special.empty_id) if self.s2s.empty_slots else ok  # two empty slots may touch
            # One gather for the labels and both neighbours: its backward is one zero-filled [B, P, V] scatter
            # instead of three (their fills were ~8 % of the demo fine-tuning step under torch.profiler).
            picked = logp.gather(2, torch.cat([labels[:, :, None], cand], 2))  # [B, P, 3]
        loss, n = masked_nll(logp, labels, sm.target_valid, self.s2s.label_smoothing,
                             None if picked is None else picked[:, :, 0])
        terms, weights, n_tokens = {self.name: loss}, {self.name: 1.0}, {self.name: n}
        if picked is not None:
            terms["unlikelihood"], n_tokens["unlikelihood"] = neighbour_unlikelihood(picked[:, :, 1:], ok,
                                                                                     sm.target_valid)
            weights["unlikelihood"] = self.s2s.unlikelihood
        if self.s2s.length_weight > 0:
            src = batch["valid"] & ~batch["target"] & ~batch["functional"]
            terms["length"] = self.length_head.loss(self.length_head(out.h, src), collated["tgt_len"].to(out.h.device))
            weights["length"], n_tokens["length"] = self.s2s.length_weight, batch["tgt_len"].shape[0]
        if self.mass is not None:
            mono = mono_batch(collated, self.special.sep_id, self.special.pad_id)
            m = self.mass(model, mono, None, generator)
            terms["mass"], weights["mass"], n_tokens["mass"] = m.terms["mass"], self.s2s.mass_weight, m.n_tokens["mass"]
        return combine(terms, weights, n_tokens, None)

    def predict_lengths(self, h: Tensor, src_mask: Tensor) -> Tensor:
        """Length logits [B, L] from content states h [B, T, d] of the source positions src_mask [B, T]."""
        return self.length_head(h, src_mask)


OBJECTIVE = Seq2SeqObjective
