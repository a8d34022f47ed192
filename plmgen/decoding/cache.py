"""Scoring backends for any-order query-stream decoding: an exact incremental cache and a naive full recompute.

Legend: B batch rows (examples × beams), M memory slots, C context slots (source tail + <sep>), L target slots,
J = M + C + L + 1 key slots (the last one is a write-only dummy), F rows filled this step, Q rows queried this
step, H heads, D head dim, d model dim, V vocab.

Both backends answer the same call, ``step(fill_pos, fill_tok, fill_ok, q_pos, q_ok) -> logp [B, Q, V]``: first
fill the chosen target slots with tokens (the F fill rows get distinct ranks in the order given: row f sees rows
f' < f), then run the query stream at the Q open slots over context + every filled target, and return the
log-probabilities there. Positions inside a step's arguments are *target indices* 0..L−1.

Why the cache is exact: under a permutation factorization a filled token's content state depends only on the
context and on tokens of lower rank, all of which are already fixed when it is filled; later tokens are never
visible to it. So each layer's keys/values of a filled token, computed once, are exactly what a full recompute of
``model(...)`` with the rank mask would produce for any later step. ``NaiveRecompute`` is that full recompute —
the reference the tests and the benchmark compare against.

Long sources (``DecodeLayout``): the context ``source + <sep>`` is encoded in one segment when it fits
``max_segment``; otherwise its head goes through Transformer-XL memory (``model(...)`` chunk by chunk, the way the
model was trained) and only the last ``max_segment`` context tokens form the final segment. Positions follow
``XLNet.forward`` with memory: memory state m sits at position m (0..M_b−1), the final context at M_b.., the target
right after (M_b + C_b + l). Only distances enter the model, so this equals the absolute source positions when
``reuse_len`` is 0.

Cache layout (pre-allocated, never concatenated): per layer k, v [B, H, J, D]; slot regions
``[memory M | context C | target L | dummy]`` with per-row positions ``k_pos`` [B, J] and validity ``k_ok`` [B, J]
(padding and open target slots are invalid, a filled target slot becomes valid). The positional table covers every
distance once and is projected per layer once; a step only gathers indices.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import RelPos, mask_bias
from ..errors import UserError
from ..masks import content_mask, perm_attention
from ..model import XLNet

OPEN_RANK = 1 << 40  # rank given to open target slots in a recompute: above every filled rank


@dataclass
class DecodeLayout:
    """A batch of sources laid out for decoding (built once, shared by both backends and by refinement)."""

    ctx: Tensor  # [B, C] final-segment context ids (source tail + <sep>), right-padded with pad
    ctx_len: Tensor  # [B] long
    tgt_len: Tensor  # [B] long, chosen target length per example
    mems: list[Tensor] | None  # per layer [B, M, d] memory states (right-padded), None when no row needs memory
    mem_len: Tensor  # [B] long, valid memory states per row (0 without memory)
    pad_id: int

    @property
    def batch(self) -> int:
        return self.ctx.shape[0]

    def index(self, rows: Tensor) -> "DecodeLayout":
        """The layout of rows ``rows`` [B'] (beam expansion / reordering)."""
        return dataclasses.replace(self, ctx=self.ctx[rows], ctx_len=self.ctx_len[rows], tgt_len=self.tgt_len[rows],
                                   mems=None if self.mems is None else [m[rows] for m in self.mems],
                                   mem_len=self.mem_len[rows])


def check_decodable(model: XLNet) -> None:
    if model.cfg.attn_type != "bi":
        raise UserError("any-order decoding needs a bidirectional model (attn_type 'bi'), got attn_type 'uni'")


@contextlib.contextmanager
def forward_table(model: XLNet):
    """Decoding always uses the forward positional table: ``bi_data`` is a training-time augmentation."""
    cfg = model.cfg
    if cfg.bi_data:
        model.cfg = dataclasses.replace(cfg, bi_data=False)
    try:
        yield
    finally:
        model.cfg = cfg


def build_layout(model: XLNet, src: list[list[int]], tgt_lengths: list[int], sep_id: int, pad_id: int,
                 max_segment: int) -> DecodeLayout:
    """Sources + target lengths -> ``DecodeLayout``; long sources are pushed through Transformer-XL memory."""
    check_decodable(model)
    dev = model.word_embedding.weight.device
    ctxs, mems_rows = [], []
    for s in src:
        ids = list(s) + [sep_id]
        head, tail = ids[: max(0, len(ids) - max_segment)], ids[-max_segment:]
        mems_rows.append(encode_memory(model, head, max_segment) if head else None)
        ctxs.append(tail)
    B, C = len(src), max(len(c) for c in ctxs)
    ctx = torch.full((B, C), pad_id, dtype=torch.long, device=dev)
    for b, c in enumerate(ctxs):
        ctx[b, : len(c)] = torch.tensor(c, device=dev)
    mem_len = torch.tensor([0 if m is None else m[0].shape[1] for m in mems_rows], device=dev)
    mems = None
    if int(mem_len.max()) > 0:
        M, d = int(mem_len.max()), model.cfg.d_model
        ref = next(m for m in mems_rows if m is not None)[0]
        mems = [torch.zeros(B, M, d, dtype=ref.dtype, device=dev) for _ in range(model.cfg.n_layer)]
        for b, m in enumerate(mems_rows):
            for i in range(model.cfg.n_layer if m is not None else 0):
                mems[i][b, : m[i].shape[1]] = m[i][0]
    return DecodeLayout(ctx=ctx, ctx_len=torch.tensor([len(c) for c in ctxs], device=dev),
                        tgt_len=torch.tensor(tgt_lengths, device=dev), mems=mems, mem_len=mem_len, pad_id=pad_id)


def encode_memory(model: XLNet, ids: list[int], max_segment: int) -> list[Tensor]:
    """Context tokens before the final segment -> per-layer memory [1, M, d], chunk by chunk as in training."""
    if model.cfg.mem_len <= 0:
        raise UserError(f"a source of {len(ids) + max_segment} tokens (with <sep>) exceeds --max_segment "
                        f"{max_segment} and the model has mem_len 0 (no Transformer-XL memory)")
    dev = model.word_embedding.weight.device
    mems = None
    with forward_table(model):
        for start in range(0, len(ids), max_segment):
            chunk = torch.tensor([ids[start: start + max_segment]], device=dev)
            mems = model(chunk, seg_ids=torch.zeros_like(chunk), mems=mems).mems
    return mems


def log_probs(model: XLNet, g: Tensor) -> Tensor:
    """Query-stream states [.., d] -> fp32 log-probabilities [.., V]."""
    return F.log_softmax(model.logits(g).float(), dim=-1)


class IncrementalCache:
    """Exact incremental two-stream decoding state for a batch (see the module docstring)."""

    def __init__(self, model: XLNet, layout: DecodeLayout):
        self.model, cfg = model, model.cfg
        B, C = layout.ctx.shape
        M = 0 if layout.mems is None else layout.mems[0].shape[1]
        L = int(layout.tgt_len.max())
        self.M, self.C, self.L, J = M, C, L, M + C + L + 1
        dev = layout.ctx.device
        slot = torch.arange(J, device=dev)[None]  # [1, J]
        m_len, c_len = layout.mem_len[:, None], layout.ctx_len[:, None]
        in_mem, in_ctx, in_tgt = slot < M, (slot >= M) & (slot < M + C), (slot >= M + C) & (slot < J - 1)
        # Positions as in XLNet.forward with memory: memory 0..M_b-1, context M_b.., target after the context.
        self.k_pos = torch.where(in_mem, slot, torch.where(in_ctx, m_len + slot - M, m_len + c_len + slot - M - C))
        self.k_pos = torch.where(slot == J - 1, torch.zeros_like(self.k_pos), self.k_pos)  # [B, J]
        self.k_ok = (in_mem & (slot < m_len)) | (in_ctx & (slot - M < c_len))  # [B, J]
        self.k_tgt = in_tgt.expand(B, J)  # segment 1 keys (targets); memory and context are segment 0
        self.t_pos = m_len + c_len + torch.arange(L, device=dev)[None]  # [B, L] position of each target slot

        # One positional table for every distance in the batch, projected once per layer.
        p_max = int(self.k_pos.max())
        self.d_max = p_max
        span = torch.arange(p_max + 1, device=dev)[None]
        table = RelPos.build(span, span, cfg.d_model, cfg.clamp_len, bi_data=False).table
        self.rk = [layer.rel_attn.project_table(table.to(dev)) for layer in model.layers]

        # Encode the context once: content stream, full visibility among context (+ memory), never the target.
        self.k, self.v = [], []
        x = model.dropout(model.word_embedding(layout.ctx))  # [B, C, d]
        ctx_pos = self.k_pos[:, M: M + C]
        rel = self._rel_index(ctx_pos)
        mask, seg_same = self.k_ok[:, None, :], ~self.k_tgt[:, None, :]
        for i in range(cfg.n_layer):
            kc, vc = model.layers[i].rel_attn.keys_values(x)
            K = kc.new_zeros(B, cfg.n_head, J, cfg.d_head)
            V = torch.zeros_like(K)
            if M:
                K[:, :, :M], V[:, :, :M] = model.layers[i].rel_attn.keys_values(layout.mems[i].to(x.dtype))
            K[:, :, M: M + C], V[:, :, M: M + C] = kc, vc
            self.k.append(K)
            self.v.append(V)
            if i + 1 < cfg.n_layer:  # the last layer's output is never a key
                x = model.layer_step(i, x, K, V, self.rk[i], rel, seg_same, mask)

    def _rel_index(self, q_pos: Tensor) -> Tensor:
        """q_pos [B, I] -> [B, I, J] index into the shared table of distance (q − k)."""
        return self.d_max - (q_pos[:, :, None] - self.k_pos[:, None, :])

    def reorder(self, rows: Tensor) -> None:
        """Keep/duplicate batch rows (beam search): rows [B'] indexes the current rows."""
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]
        self.k_pos, self.k_ok, self.k_tgt = self.k_pos[rows], self.k_ok[rows], self.k_tgt[rows]
        self.t_pos = self.t_pos[rows]

    def step(self, fill_pos: Tensor, fill_tok: Tensor, fill_ok: Tensor, q_pos: Tensor, q_ok: Tensor) -> Tensor:
        """Fill [B, F] target slots with tokens (ranks in column order), then query [B, Q] slots -> [B, Q, V]."""
        model, cfg = self.model, self.model.cfg
        B, Fn, Q = fill_pos.shape[0], fill_pos.shape[1], q_pos.shape[1]
        J, base = self.k_ok.shape[1], self.M + self.C
        slots = torch.where(fill_ok, base + fill_pos, torch.full_like(fill_pos, J - 1))  # [B, F]; J−1: dummy
        k_ok = self.k_ok.scatter(1, slots, fill_ok) if Fn else self.k_ok  # [B, J] valid keys after this step
        # Visibility: query rows (and a single fill row) see every valid key, the new ones included; with several
        # fills, fill row f sees the fills f' <= f only (distinct ranks in column order).
        if Fn <= 1:
            mask = k_ok[:, None, :]  # [B, 1, J], shared by all rows
        else:
            new = torch.zeros(B, Fn, J, dtype=torch.bool, device=slots.device)
            new.scatter_(2, slots[:, :, None], fill_ok[:, :, None])  # [B, F, J] one-hot of valid new slots
            seen = self.k_ok[:, None, :] | (new.cumsum(1) > 0)  # [B, F, J]
            mask = torch.cat([seen, k_ok[:, None, :].expand(B, Q, J)], dim=1)  # [B, F+Q, J]
        dtype = self.k[0].dtype
        bias = mask_bias(mask, dtype)  # converted once, used by every layer
        row_pos = self.t_pos.gather(1, torch.cat([fill_pos, q_pos], dim=1))  # [B, F+Q]
        rel = self.d_max - (row_pos[:, :, None] - self.k_pos[:, None, :])  # [B, F+Q, J]
        seg_same = self.k_tgt[:, None, :].to(dtype)  # every row is a target row (segment 1)

        emb = model.dropout(model.word_embedding(fill_tok))  # [B, F, d] content stream starts from tokens
        g = model.dropout(model.mask_emb.to(emb.dtype).expand(B, Q, -1))  # query stream starts from w
        x = torch.cat([emb, g], dim=1)  # [B, F+Q, d]
        rows = torch.arange(B, device=slots.device)[:, None]  # K[rows, :, slots] is [B, F, H, D]
        for i in range(cfg.n_layer):
            if Fn:  # an index put rather than scatter_, which copies the whole cache twice per call in bf16 on CPU
                kn, vn = model.layers[i].rel_attn.keys_values(x[:, :Fn])  # [B, H, F, D]
                self.k[i][rows, :, slots] = kn.transpose(1, 2).to(dtype)
                self.v[i][rows, :, slots] = vn.transpose(1, 2).to(dtype)
            # The fill rows' output after the last layer is never a key: run the query rows alone there.
            if i + 1 == cfg.n_layer and Fn:
                x, rel = x[:, Fn:], rel[:, Fn:]
                bias = bias if bias.shape[1] == 1 else bias[:, Fn:]
            x = model.layer_step(i, x, self.k[i], self.v[i], self.rk[i], rel, seg_same, bias)
        self.k_ok = k_ok
        out = x[:, -Q:] if Q else x[:, :0]
        return log_probs(model, out)


class NaiveRecompute:
    """Reference backend: every step re-runs ``model(...)`` on ``context + all filled targets`` with the rank mask.

    The natural seq2seq layout is used (context at 0..C_b−1, target right after, padding at the end, memory per row
    through ``model(..., mems=...)``), independent of the cache's slot layout.
    """

    def __init__(self, model: XLNet, layout: DecodeLayout):
        self.model, self.layout = model, layout
        B, L = layout.batch, int(layout.tgt_len.max())
        dev = layout.ctx.device
        self.tokens = torch.full((B, L), layout.pad_id, dtype=torch.long, device=dev)
        self.rank = torch.full((B, L), OPEN_RANK, dtype=torch.long, device=dev)  # filled: fill order 0,1,..
        self.n_filled = torch.zeros(B, dtype=torch.long, device=dev)

    def reorder(self, rows: Tensor) -> None:
        self.layout = self.layout.index(rows)
        self.tokens, self.rank, self.n_filled = self.tokens[rows], self.rank[rows], self.n_filled[rows]

    def step(self, fill_pos: Tensor, fill_tok: Tensor, fill_ok: Tensor, q_pos: Tensor, q_ok: Tensor) -> Tensor:
        rank_new = self.n_filled[:, None] + fill_ok.long().cumsum(1) - 1  # distinct ranks in column order
        b, c = fill_ok.nonzero(as_tuple=True)
        self.tokens[b, fill_pos[b, c]] = fill_tok[b, c]
        self.rank[b, fill_pos[b, c]] = rank_new[b, c]
        self.n_filled += fill_ok.sum(1)
        return full_forward(self.model, self.layout, self.tokens, self.rank, q_pos, q_ok)


def full_forward(model: XLNet, layout: DecodeLayout, tokens: Tensor, rank: Tensor, q_pos: Tensor,
                 q_ok: Tensor) -> Tensor:
    """One ``model(...)`` pass over context + target with target ranks ``rank`` [B, L] (−1 = context, OPEN_RANK =
    open), query stream at target indices q_pos [B, Q] -> log-probs [B, Q, V]. Used by the recompute and refinement."""
    B, L = tokens.shape
    dev = tokens.device
    c_len, t_len = layout.ctx_len, layout.tgt_len
    T = int((c_len + t_len).max()) + 1  # + one junk column that absorbs padded target slots
    tcol = c_len[:, None] + torch.arange(L, device=dev)[None]  # [B, L] column of each target slot
    tcol = torch.where(torch.arange(L, device=dev)[None] < t_len[:, None], tcol, torch.full_like(tcol, T - 1))
    ids = torch.full((B, T), layout.pad_id, dtype=torch.long, device=dev)
    ids[:, : layout.ctx.shape[1]] = layout.ctx
    ids.scatter_(1, tcol, tokens)
    col = torch.arange(T, device=dev)[None]
    valid = col < (c_len + t_len)[:, None]
    is_tgt = (col >= c_len[:, None]) & valid
    r = torch.full((B, T), -1, dtype=torch.long, device=dev)
    r.scatter_(1, tcol, rank)
    r = torch.where(is_tgt, r, torch.full_like(r, -1))
    seg = is_tgt.long()
    tpos = tcol.gather(1, q_pos)  # [B, Q]
    cmask = content_mask(r, valid)
    qmask = perm_attention(r, valid).gather(1, tpos[:, :, None].expand(-1, -1, T)) & q_ok[:, :, None]
    with forward_table(model):
        if layout.mems is None:
            g = model(ids, seg, cmask, qmask, tpos).g
        else:  # memory differs per row and is always visible in model(...): one row at a time
            rows = []
            for b in range(B):
                m = int(layout.mem_len[b])
                mems = [x[b: b + 1, :m] for x in layout.mems] if m else None
                rows.append(model(ids[b: b + 1], seg[b: b + 1], cmask[b: b + 1], qmask[b: b + 1], tpos[b: b + 1],
                                  mems=mems).g)
            g = torch.cat(rows)
    return log_probs(model, g)


BACKENDS = {"cache": IncrementalCache, "recompute": NaiveRecompute}
