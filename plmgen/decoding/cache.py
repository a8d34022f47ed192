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
right after (M_b + C_b + l). Only distances enter the model, so this equals the absolute source positions (every
chunk's states become memory: decoding has no ``reuse_len``). A model fine-tuned with
``Seq2SeqConfig.aligned_positions`` has target slot l at position l (numbered like the source, which starts at 0)
and the end marker at L_b.

Cache layout (pre-allocated, never concatenated): per layer k, v [B, H, J, D]; slot regions
``[memory M | context C | target L | dummy]`` with per-row positions ``k_pos`` [B, J] and validity ``k_ok`` [B, J]
(padding and open target slots are invalid, a filled target slot becomes valid). A draft tree's pass
(``tree_step``) appends scratch slots after the dummy for its nodes (allocated once); ``commit`` copies the
accepted ones home. The positional table covers every distance once and is projected per layer once; a step only
gathers indices.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import mask_bias
from ..errors import UserError
from ..masks import content_mask, perm_attention
from ..model import KVCache, Rows, XLNet

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
    end_id: int | None = None  # the end marker after the last target slot (``Seq2SeqConfig.end_marker``), or None
    aligned: bool = False  # target slot l at position l (``Seq2SeqConfig.aligned_positions``), else after the context

    @property
    def batch(self) -> int:
        return self.ctx.shape[0]

    def index(self, rows: Tensor, tgt_len: Tensor | None = None) -> "DecodeLayout":
        """The layout of rows ``rows`` [B'] (beam expansion / reordering; length candidates with ``tgt_len`` [B'])."""
        tgt_len = self.tgt_len[rows] if tgt_len is None else tgt_len
        return dataclasses.replace(self, ctx=self.ctx[rows], ctx_len=self.ctx_len[rows], tgt_len=tgt_len,
                                   mems=None if self.mems is None else [m[rows] for m in self.mems],
                                   mem_len=self.mem_len[rows])


def check_decodable(model: XLNet) -> None:
    if model.cfg.attn_type != "bi":
        raise UserError("any-order decoding needs a bidirectional model (attn_type 'bi'), got attn_type 'uni'")


def build_layout(model: XLNet, src: list[list[int]], tgt_lengths: list[int], sep_id: int, pad_id: int,
                 max_segment: int, end_id: int | None = None, aligned: bool = False) -> DecodeLayout:
    """Sources + target lengths -> ``DecodeLayout``; long sources are pushed through Transformer-XL memory.
    end_id: the end marker the model was fine-tuned with (None: none); aligned: its target positions were
    ``Seq2SeqConfig.aligned_positions``."""
    check_decodable(model)
    dev = model_device(model)
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
                        tgt_len=torch.tensor(tgt_lengths, device=dev), mems=mems, mem_len=mem_len, pad_id=pad_id,
                        end_id=end_id, aligned=aligned)


def encode_memory(model: XLNet, ids: list[int], max_segment: int) -> list[Tensor]:
    """Context tokens before the final segment -> per-layer memory [1, M, d], chunk by chunk as in training."""
    if model.cfg.mem_len <= 0:
        raise UserError(f"a source of {len(ids) + max_segment} tokens (with <sep>) exceeds --max_segment "
                        f"{max_segment} and the model has mem_len 0 (no Transformer-XL memory)")
    dev = model_device(model)
    mems = None
    for start in range(0, len(ids), max_segment):
        chunk = torch.tensor([ids[start: start + max_segment]], device=dev)
        pos = torch.arange(chunk.shape[1], device=dev)[None]
        mems = model.run(Rows(chunk, pos, torch.zeros_like(chunk)), mems, bi_data=False).mems
    return mems


def model_device(model: XLNet) -> torch.device:
    return next(model.parameters()).device


def log_probs(model: XLNet, g: Tensor) -> Tensor:
    """Query-stream states [.., d] -> fp32 log-probabilities [.., V]."""
    return F.log_softmax(model.logits(g), dim=-1, dtype=torch.float32)  # the cast fused: one pass fewer


@dataclass
class EncodedContext:
    """The source encoded once: a ``KVCache`` holding every layer's keys/values of ``[memory | context]`` and the
    context's final content states. The decoder's cache grows from it and the length head reads ``h``, so both see
    the same states (memory included for long sources)."""

    cache: KVCache  # M + C slots
    ok: Tensor  # [B, M + C] valid slots
    h: Tensor  # [B, C, d] final content states of the context (padding rows are junk)

    def index(self, rows: Tensor) -> "EncodedContext":
        return EncodedContext(self.cache.index(rows), self.ok[rows], self.h[rows])


def context_slots(layout: DecodeLayout) -> tuple[Tensor, Tensor]:
    """Positions [B, M + C] of the memory and context slots (as in ``XLNet.forward`` with memory: memory state m at
    m, the final context from M_b on) and their validity [B, M + C]."""
    M = 0 if layout.mems is None else layout.mems[0].shape[1]
    slot = torch.arange(M + layout.ctx.shape[1], device=layout.ctx.device)[None]
    m_len, c_len = layout.mem_len[:, None], layout.ctx_len[:, None]
    pos = torch.where(slot < M, slot, m_len + slot - M)
    ok = torch.where(slot < M, slot < m_len, slot - M < c_len)
    return pos, ok


def target_positions(layout: DecodeLayout, L: int) -> tuple[Tensor, Tensor]:
    """Positions [B, L] of L target slots (and [B, 1], the end marker's after each row's last slot): right after
    each row's memory + context, or from 0 with ``layout.aligned``."""
    start = torch.zeros_like(layout.ctx_len) if layout.aligned else layout.mem_len + layout.ctx_len  # [B]
    return start[:, None] + torch.arange(L, device=layout.ctx.device)[None], (start + layout.tgt_len)[:, None]


def recompute_positions(layout: DecodeLayout, col: Tensor, target: Tensor) -> Tensor | None:
    """Positions [B, T] for a naive recompute's ``model(...)`` pass over ``[context | target]`` columns col [1, T]
    (memory before them at −M_b..−1): None (the default 0..T−1) unless ``layout.aligned``; then the target columns
    ``target`` [B, T] (target tokens, the end marker) sit at l − M_b, which is the cache's l against its context
    from M_b on."""
    if not layout.aligned:
        return None
    return torch.where(target, col - (layout.ctx_len + layout.mem_len)[:, None], col)


def encode_context(model: XLNet, layout: DecodeLayout) -> EncodedContext:
    """Content stream over the context (full visibility among context + memory, never the target), its keys and
    values written into a fresh ``KVCache``."""
    cfg = model.cfg
    B, C = layout.ctx.shape
    M = 0 if layout.mems is None else layout.mems[0].shape[1]
    k_pos, k_ok = context_slots(layout)  # [B, M + C]
    seg = torch.zeros_like(k_pos)  # memory and context: segment 0
    cache = KVCache(k_pos, seg, cfg.d_model, cfg.clamp_len)
    rows = Rows(layout.ctx, k_pos[:, M:], seg[:, M:], k_ok[:, None, :])
    slots = torch.arange(M + C, device=k_pos.device).expand(B, M + C)
    h = model.run(rows, layout.mems, cache=cache, slots=slots, bi_data=False).h
    return EncodedContext(cache, k_ok, h)


class IncrementalCache:
    """Exact incremental two-stream decoding state for a batch (see the module docstring)."""

    def __init__(self, model: XLNet, layout: DecodeLayout, encoded: EncodedContext | None = None):
        self.model = model
        enc = encoded if encoded is not None else encode_context(model, layout)
        B, C = layout.ctx.shape
        M = 0 if layout.mems is None else layout.mems[0].shape[1]
        L = int(layout.tgt_len.max())
        self.M, self.C, self.L = M, C, L
        # Target slots (after each row's context, or from 0 when aligned), then the end marker (if any) right after
        # the row's last target; the dummy slot (last) sits at position 0 and is never valid.
        self.t_pos, end_pos = target_positions(layout, L)  # [B, L], [B, 1]
        extra = [end_pos] if layout.end_id is not None else []
        new_pos = torch.cat([self.t_pos, *extra, torch.zeros_like(self.t_pos[:, :1])], dim=1)
        self.kv = enc.cache.extend(new_pos, torch.ones_like(new_pos))  # segment 1: target keys
        self.k_ok = torch.cat([enc.ok, enc.ok.new_zeros(B, new_pos.shape[1])], dim=1)  # [B, J]
        self.dummy = self.k_ok.shape[1] - 1  # tree steps append scratch slots after it
        self.n_scratch = 0
        if layout.end_id is not None:
            self._encode_end(layout.end_id, end_pos)

    def _encode_end(self, end_id: int, end_pos: Tensor) -> None:
        """The end marker's keys/values: it sees the context and itself (never a target slot), like in training."""
        B, slot = end_pos.shape[0], self.M + self.C + self.L
        slots = torch.full_like(end_pos, slot)
        self.k_ok = self.k_ok.scatter(1, slots, True)
        mask = self.k_ok.clone()
        rows = Rows(torch.full_like(end_pos, end_id), end_pos, torch.ones_like(end_pos), mask[:, None, :])
        self.model.run(rows, cache=self.kv, slots=slots, bi_data=False, need_h=False)

    def reorder(self, rows: Tensor) -> None:
        """Keep/duplicate batch rows (beam search): rows [B'] indexes the current rows."""
        self.kv = self.kv.index(rows)
        self.k_ok, self.t_pos = self.k_ok[rows], self.t_pos[rows]

    def reject(self, pos: Tensor, ok: Tensor) -> None:
        """Forget target slots pos [B, n] (where ok) filled by the last step (rejected speculative drafts)."""
        slots = torch.where(ok, self.M + self.C + pos, torch.full_like(pos, self.dummy))
        self.k_ok = self.k_ok.scatter(1, slots, torch.zeros_like(ok))

    def step(self, fill_pos: Tensor, fill_tok: Tensor, fill_ok: Tensor, q_pos: Tensor, q_ok: Tensor,
             q_sees: Tensor | None = None) -> Tensor:
        """Fill [B, F] target slots with tokens (ranks in column order), then query [B, Q] slots -> [B, Q, V].
        q_sees [B, Q] (optional): query row q sees only the first q_sees fill rows (default: all of them)."""
        B, Fn, Q = fill_pos.shape[0], fill_pos.shape[1], q_pos.shape[1]
        J, base = self.k_ok.shape[1], self.M + self.C
        slots = torch.where(fill_ok, base + fill_pos, torch.full_like(fill_pos, self.dummy))  # [B, F]
        k_ok = self.k_ok.scatter(1, slots, fill_ok) if Fn else self.k_ok  # [B, J] valid keys after this step
        # Visibility: query rows (and a single fill row) see every valid key, the new ones included; with several
        # fills, fill row f sees the fills f' <= f only (distinct ranks in column order).
        if Fn <= 1 and q_sees is None:
            mask = k_ok[:, None, :]  # [B, 1, J], shared by all rows
        else:
            new = torch.zeros(B, Fn, J, dtype=torch.bool, device=slots.device)
            new.scatter_(2, slots[:, :, None], fill_ok[:, :, None])  # [B, F, J] one-hot of valid new slots
            seen = self.k_ok[:, None, :] | (new.cumsum(1) > 0)  # [B, F, J]
            if q_sees is None:
                q_mask = k_ok[:, None, :].expand(B, Q, J)
            else:  # prefix m of the fills: row m of [old keys; seen]
                prefixes = torch.cat([self.k_ok[:, None, :], seen], dim=1)  # [B, F+1, J]
                q_mask = prefixes.gather(1, q_sees[:, :, None].expand(B, Q, J))
            mask = torch.cat([seen, q_mask], dim=1)  # [B, F+Q, J]
        row_pos = self.t_pos.gather(1, torch.cat([fill_pos, q_pos], dim=1))  # [B, F+Q]
        bias = mask_bias(mask, self.kv.k[0].dtype)  # converted once, used by every layer
        rows = Rows(fill_tok, row_pos, torch.ones_like(row_pos), bias, n_query=Q)  # every row is a target row
        out = self.model.run(rows, cache=self.kv, slots=slots, bi_data=False, need_h=False)
        self.k_ok = k_ok
        return log_probs(self.model, out.g if Q else self.kv.k[0].new_zeros(B, 0, self.model.cfg.d_model))

    def tree_step(self, node_pos: Tensor, node_tok: Tensor, node_ok: Tensor, anc: Tensor, q_pos: Tensor,
                  q_ok: Tensor, q_node: Tensor) -> Tensor:
        """A draft tree's pass: node n (N nodes) fills target slot node_pos[:, n] with node_tok[:, n] *on top of*
        its ancestors only (anc [N, N] bool: node n's ancestors and itself); query row q (Q rows) runs at target
        slot q_pos[:, q] in the state of node q_node[:, q] ([B, Q] long) -> log-probs [B, Q, V]. Sibling nodes may
        hold the same slot, so node keys/values go to N scratch slots; :meth:`commit` moves the accepted path's
        into their target slots. Nothing becomes visible to later steps before that."""
        B, N = node_pos.shape
        if self.n_scratch < N:  # scratch slots after the dummy, allocated once per size
            extra = torch.zeros(B, N - self.n_scratch, dtype=torch.long, device=node_pos.device)
            self.kv = self.kv.extend(extra, torch.ones_like(extra))
            self.k_ok = torch.cat([self.k_ok, torch.zeros_like(extra, dtype=torch.bool)], dim=1)
            self.n_scratch = N
        first = self.dummy + 1
        scratch = first + torch.arange(N, device=node_pos.device).expand(B, N)
        slots = torch.where(node_ok, scratch, torch.full_like(scratch, self.dummy))  # [B, N]
        self.kv.place(scratch, self.t_pos.gather(1, node_pos))
        vis = anc[None] & node_ok[:, None, :]  # [B, N, N] node rows see their filled ancestors' scratch slots
        q_vis = vis.gather(1, q_node[:, :, None].expand(-1, -1, N)) & q_ok[:, :, None]  # [B, Q, N]
        vis = torch.cat([vis, q_vis], dim=1)  # [B, N+Q, N]
        J = self.k_ok.shape[1]
        mask = self.k_ok[:, None, :].expand(B, N + q_pos.shape[1], J).clone()
        mask[:, :, first: first + N] = vis
        row_pos = self.t_pos.gather(1, torch.cat([node_pos, q_pos], dim=1))
        bias = mask_bias(mask, self.kv.k[0].dtype)
        rows = Rows(node_tok, row_pos, torch.ones_like(row_pos), bias, n_query=q_pos.shape[1])
        out = self.model.run(rows, cache=self.kv, slots=slots, bi_data=False, need_h=False)
        return log_probs(self.model, out.g)

    def commit(self, node_pos: Tensor, accepted: Tensor) -> None:
        """Keep the accepted nodes [B, N] of the last :meth:`tree_step` (one path per row): their scratch
        keys/values move into their target slots, which become visible."""
        n = max(int(accepted.sum(1).max()), 1)  # the longest accepted path: copy only those nodes
        node = torch.sort((~accepted).to(torch.int8), dim=1, stable=True).indices[:, :n]  # [B, n] accepted first
        ok = accepted.gather(1, node)
        dst = torch.where(ok, self.M + self.C + node_pos.gather(1, node), torch.full_like(node, self.dummy))
        self.kv.copy_slots(torch.where(ok, self.dummy + 1 + node, torch.full_like(node, self.dummy)), dst)
        self.k_ok = self.k_ok.scatter(1, dst, ok)


class NaiveRecompute:
    """Reference backend: every step re-runs ``model(...)`` on ``context + all filled targets`` with the rank mask.

    The natural seq2seq layout is used (context at 0..C_b−1, target right after, padding at the end, memory per row
    through ``model(..., mems=...)``), independent of the cache's slot layout.
    """

    def __init__(self, model: XLNet, layout: DecodeLayout, encoded: "EncodedContext | None" = None):
        self.model, self.layout = model, layout
        B, L = layout.batch, int(layout.tgt_len.max())
        dev = layout.ctx.device
        self.tokens = torch.full((B, L), layout.pad_id, dtype=torch.long, device=dev)
        self.rank = torch.full((B, L), OPEN_RANK, dtype=torch.long, device=dev)  # filled: fill order 0,1,..
        self.n_filled = torch.zeros(B, dtype=torch.long, device=dev)

    def reorder(self, rows: Tensor) -> None:
        self.layout = self.layout.index(rows)
        self.tokens, self.rank, self.n_filled = self.tokens[rows], self.rank[rows], self.n_filled[rows]

    def reject(self, pos: Tensor, ok: Tensor) -> None:
        b, c = ok.nonzero(as_tuple=True)
        self.tokens[b, pos[b, c]] = self.layout.pad_id
        self.rank[b, pos[b, c]] = OPEN_RANK
        self.n_filled -= ok.sum(1)

    def step(self, fill_pos: Tensor, fill_tok: Tensor, fill_ok: Tensor, q_pos: Tensor, q_ok: Tensor,
             q_sees: Tensor | None = None) -> Tensor:
        counts = fill_ok.long().cumsum(1)
        rank_new = self.n_filled[:, None] + counts - 1  # distinct ranks in column order
        q_limit = None
        if q_sees is not None:  # a query row sees the targets ranked below the first q_sees fills' end
            seen = torch.cat([torch.zeros_like(counts[:, :1]), counts], dim=1).gather(1, q_sees)
            q_limit = self.n_filled[:, None] + seen
        b, c = fill_ok.nonzero(as_tuple=True)
        self.tokens[b, fill_pos[b, c]] = fill_tok[b, c]
        self.rank[b, fill_pos[b, c]] = rank_new[b, c]
        self.n_filled += fill_ok.sum(1)
        return full_forward(self.model, self.layout, self.tokens, self.rank, q_pos, q_ok, q_limit)


def full_forward(model: XLNet, layout: DecodeLayout, tokens: Tensor, rank: Tensor, q_pos: Tensor,
                 q_ok: Tensor, q_limit: Tensor | None = None) -> Tensor:
    """One ``model(...)`` pass over context + target with target ranks ``rank`` [B, L] (−1 = context, OPEN_RANK =
    open), query stream at target indices q_pos [B, Q] -> log-probs [B, Q, V]. Used by the recompute and refinement.
    q_limit [B, Q] (optional): query row q sees the targets of rank < q_limit (default: below its position's rank)."""
    B, L = tokens.shape
    dev = tokens.device
    c_len, t_len = layout.ctx_len, layout.tgt_len
    n_end = int(layout.end_id is not None)
    T = int((c_len + t_len).max()) + n_end + 1  # (+ the end marker) + one junk column that absorbs padded slots
    tcol = c_len[:, None] + torch.arange(L, device=dev)[None]  # [B, L] column of each target slot
    tcol = torch.where(torch.arange(L, device=dev)[None] < t_len[:, None], tcol, torch.full_like(tcol, T - 1))
    ids = torch.full((B, T), layout.pad_id, dtype=torch.long, device=dev)
    ids[:, : layout.ctx.shape[1]] = layout.ctx
    ids.scatter_(1, tcol, tokens)
    col = torch.arange(T, device=dev)[None]
    end = (col == (c_len + t_len)[:, None]) & bool(n_end)  # [B, T] the end marker's column
    ids = torch.where(end, layout.end_id if n_end else layout.pad_id, ids)
    is_tgt = (col >= c_len[:, None]) & (col < (c_len + t_len)[:, None])
    valid = (col < c_len[:, None]) | is_tgt | end
    r = torch.full((B, T), -1, dtype=torch.long, device=dev)
    r.scatter_(1, tcol, rank)
    r = torch.where(is_tgt, r, torch.full_like(r, -1))
    seg = (is_tgt | end).long()
    pos = recompute_positions(layout, col, is_tgt | end)
    tpos = tcol.gather(1, q_pos)  # [B, Q]
    cmask = content_mask(r, valid) & ~(end[:, None, :] & ~(is_tgt | end)[:, :, None])  # the context never sees it
    if q_limit is None:
        qmask = perm_attention(r, valid).gather(1, tpos[:, :, None].expand(-1, -1, T)) & q_ok[:, :, None]
    else:
        qmask = valid[:, None, :] & (r[:, None, :] < q_limit[:, :, None]) & q_ok[:, :, None]
    if layout.mems is None:
        g = model(ids, seg, cmask, qmask, tpos, bi_data=False, positions=pos).g
    else:  # memory differs per row and is always visible in model(...): one row at a time
        rows = []
        for b in range(B):
            m = int(layout.mem_len[b])
            mems = [x[b: b + 1, :m] for x in layout.mems] if m else None
            rows.append(model(ids[b: b + 1], seg[b: b + 1], cmask[b: b + 1], qmask[b: b + 1], tpos[b: b + 1],
                              mems=mems, bi_data=False, positions=None if pos is None else pos[b: b + 1]).g)
        g = torch.cat(rows)
    return log_probs(model, g)


BACKENDS = {"cache": IncrementalCache, "recompute": NaiveRecompute}
