"""XLNet backbone: embeddings, two-stream relative attention blocks, Transformer-XL memory, tied LM head.

Legend: B batch, T segment length, M memory length, P predicted positions (query-stream rows), d model dim,
V vocab. Masks are bool, True = may attend; they cover the current segment's keys ([.., T]); memory is always
visible and its columns are added here.

The two streams share every weight, so a layer runs them as one block of rows: ``x = [h (T rows); g (P rows)]``.
Queries come from all rows, keys/values from ``[mems; h]`` only — the query stream changes queries, never keys.
The model returns hidden states; losses live in ``plmgen.objectives``, decoding in ``plmgen.decoding``.

One way in: :meth:`XLNet.run` takes ``Rows`` — token rows and query-stream rows at explicit positions, segments
and a bool mask over the keys — and either Transformer-XL memory or a :class:`KVCache` the layers write their
keys/values into. ``forward`` (training, HF parity), mask-plm's row layout and the decoder are thin callers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attention import Dropout, FeedForward, RelAttention, RelPos, matmul_dtype
from .config import ModelConfig
from .errors import UserError
from .masks import causal_mask

# Sane limits for a model config read from a file, checked before anything is built from it (XLNet-Large is
# 32000 / 1024 / 24 / 16 / 4096).
MODEL_LIMITS = {"vocab_size": 1_000_000, "d_model": 16_384, "n_layer": 256, "n_head": 256, "d_inner": 65_536}


def check_model_limits(cfg: ModelConfig, where: str) -> None:
    for field, limit in MODEL_LIMITS.items():
        if getattr(cfg, field) > limit:
            raise UserError(f"{where}: {field} {getattr(cfg, field)} is over the limit of {limit}; the file is "
                            "damaged or not a checkpoint of this kind")


def check_state_dict(where: str, module: nn.Module, state: dict, prefix: str = "") -> None:
    """``state``'s ``prefix.*`` tensors have exactly ``module``'s names and shapes (build it on the meta device to
    check before allocating anything) and finite values; UserError naming the first offender otherwise."""
    want = module.state_dict()
    dot = prefix + "." if prefix else ""
    have = {k[len(dot):]: v for k, v in state.items() if k.startswith(dot)}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or extra:
        what = f"lacks {dot}{missing[0]}" if missing else f"has an unexpected {dot}{extra[0]}"
        raise UserError(f"{where}: checkpoint {what} ({len(missing)} missing, {len(extra)} unexpected tensors)")
    for name, t in have.items():
        if not isinstance(t, torch.Tensor) or t.shape != want[name].shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise UserError(f"{where}: {dot}{name} has shape {got}, the config says {tuple(want[name].shape)}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UserError(f"{where}: {dot}{name} holds NaN/inf values (a diverged run?); use another checkpoint")


@dataclass
class XLNetOutput:
    h: Tensor  # [B, T, d] final content stream
    g: Tensor | None  # [B, P, d] final query stream (None without target_pos)
    mems: list[Tensor] | None  # per layer [B, M', d], detached; None when mem_len == 0


@dataclass
class Rows:
    """One call's rows: token rows (content stream; embedded tokens), then ``n_query`` query-stream rows (w).

    The first ``n_keys`` token rows are keys (default: all); with memory, the first ``n_mem`` token rows become the
    next memory (default: n_keys). Positions are within the segment (memory keys sit at −M..−1); segment ids of
    memory are 0. ``mask`` [B|1, N+P, J] covers every key column — memory first, or the cache's J slots — as a
    bool (True = may attend) or its ``attention.mask_bias``; None = all visible.
    """

    ids: Tensor  # [B, N] token ids of the token rows
    pos: Tensor  # [B|1, N+P] position of every row
    seg: Tensor | None = None  # [B|1, N+P] segment ids
    mask: Tensor | None = None  # [B|1, N+P, J]
    n_query: int = 0  # P
    n_keys: int | None = None
    n_mem: int | None = None


class KVCache:
    """Keys/values of every layer in J pre-allocated slots with positions ``pos`` [B, J] and segment ids ``seg``
    [B, J]; the layers write the keys/values of a call's key rows into the slots it names (``XLNet.run(...,
    cache=, slots=)``) and attend over all J slots. The positional table covers every distance between slots once;
    each layer projects it once (on first use) and reuses it at every later call."""

    def __init__(self, pos: Tensor, seg: Tensor, d_model: int, clamp_len: int = -1):
        self.pos, self.seg, self.clamp_len = pos, seg, clamp_len
        self.k: list[Tensor | None] = []
        self.v: list[Tensor | None] = []
        self.rk: list[Tensor | None] = []
        self.memos: dict = {}  # ``memo``: shared with the caches ``extend`` and ``index`` derive from this one
        span = torch.arange(int(pos.max()) - int(pos.min()) + 1, device=pos.device)[None]
        self.d_max = span.shape[1] - 1
        self.table = RelPos.build(span, span, d_model, clamp_len).table  # distances d_max .. −d_max

    def rel_index(self, q_pos: Tensor) -> Tensor:
        """q_pos [B|1, I] -> [B, I, J] index into ``table`` of distance (q − k)."""
        return self.d_max - (q_pos[:, :, None] - self.pos[:, None, :])

    def write(self, layer: int, slots: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k, v [B, H, F, D] into slots [B, F] of ``layer`` (allocated on first write) -> the layer's K, V
        [B, H, J, D]. An index put rather than scatter_, which copies the whole cache twice per call in bf16 on CPU."""
        while len(self.k) <= layer:
            self.k.append(None), self.v.append(None), self.rk.append(None)
        if self.k[layer] is None:
            B, H, _, D = k.shape
            self.k[layer] = k.new_zeros(B, H, self.pos.shape[1], D)
            self.v[layer] = torch.zeros_like(self.k[layer])
        K, V = self.k[layer], self.v[layer]
        if slots.shape[1]:
            rows = self.memo(("rows", K.shape[0]), lambda: torch.arange(K.shape[0], device=K.device)[:, None])
            K[rows, :, slots] = k.transpose(1, 2).to(K.dtype)
            V[rows, :, slots] = v.transpose(1, 2).to(V.dtype)
        return K, V

    def place(self, slots: Tensor, pos: Tensor) -> None:
        """Give slots [B, n] the positions pos [B, n] (scratch slots reused for other positions; every position
        must lie inside the span the table was built for)."""
        self.pos = self.pos.scatter(1, slots, pos)

    def copy_slots(self, src: Tensor, dst: Tensor) -> None:
        """Every layer's keys/values of slots src [B, n] into slots dst [B, n] (a row's pairs must not chain)."""
        rows = torch.arange(src.shape[0], device=src.device)[:, None]
        for K, V in zip(self.k, self.v):
            if K is not None:
                K[rows, :, dst] = K[rows, :, src]
                V[rows, :, dst] = V[rows, :, src]

    def memo(self, key, build):
        """``build()`` once per key for this cache's lifetime: what a decode computes from the weights alone (they
        do not change while it runs)."""
        if key not in self.memos:
            self.memos[key] = build()
        return self.memos[key]

    def projected(self, layer: int, project) -> Tensor:
        """The layer's projected table, computed by ``project(table)`` once."""
        if self.rk[layer] is None:
            self.rk[layer] = project(self.table)
        return self.rk[layer]

    def extend(self, pos: Tensor, seg: Tensor) -> "KVCache":
        """This cache with n more (empty) slots at positions pos [B, n] and segments seg [B, n] after the current
        ones; the positional table is rebuilt for the new span (each layer re-projects it once)."""
        out = KVCache(torch.cat([self.pos, pos], 1), torch.cat([self.seg, seg], 1), self.table.shape[-1], self.clamp_len)
        pad = lambda t: None if t is None else torch.cat([t, t.new_zeros(*t.shape[:2], pos.shape[1], t.shape[3])], 2)  # noqa: E731
        out.k, out.v, out.rk = [pad(k) for k in self.k], [pad(v) for v in self.v], [None] * len(self.k)
        out.memos = self.memos
        return out

    def index(self, rows: Tensor) -> "KVCache":
        """The cache of batch rows ``rows`` [B'] (beam reordering, length candidates)."""
        out = KVCache.__new__(KVCache)
        out.pos, out.seg, out.clamp_len = self.pos[rows], self.seg[rows], self.clamp_len
        out.table, out.d_max, out.rk, out.memos = self.table, self.d_max, self.rk, self.memos
        out.k = [None if k is None else k.index_select(0, rows) for k in self.k]
        out.v = [None if v is None else v.index_select(0, rows) for v in self.v]
        return out


@dataclass
class LayerInputs:
    """What every layer of one ``XLNet.run`` call shares (built once per call)."""

    rel_index: Tensor  # [B|1, I, J]
    table: Tensor | None  # [R, d] (or [2, R, d]) positional table; None with a cache (it holds its own)
    skew_rows: int
    seg_same: Tensor | None  # [B|1, I, J] 1 where row and key share a segment, in the scores' dtype
    mask: Tensor | None  # [B|1, I, J] bool or bias

    def rows(self, r: slice) -> "LayerInputs":
        sel = lambda t: t if t is None or t.shape[1] == 1 else t[:, r]  # noqa: E731  [B|1, 1, J] masks are shared
        return LayerInputs(self.rel_index[:, r], self.table, max(min(self.skew_rows, r.stop) - r.start, 0),
                           sel(self.seg_same), sel(self.mask))


class XLNetLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.rel_attn = RelAttention(cfg.d_model, cfg.n_head, cfg.dropout, cfg.dropatt, cfg.layer_norm_eps)
        self.ff = FeedForward(cfg.d_model, cfg.d_inner, cfg.ff_activation, cfg.dropout, cfg.layer_norm_eps)

    def forward(self, x: Tensor, keys: Tensor, inp: LayerInputs, biases: tuple[Tensor, Tensor, Tensor],
                parts: tuple[slice, ...], cache: KVCache | None = None, index: int = 0,
                slots: Tensor | None = None) -> tuple[Tensor, ...]:
        """Rows x [B, I, d] attend over the keys/values of ``keys`` [B, N, d] (with a cache: written into its
        ``slots`` [B, N], attending over all its slots) -> one output per row range in ``parts``."""
        k, v = self.rel_attn.keys_values(keys, contiguous=cache is None)  # [B, H, N, D]
        if cache is None:
            rk = self.rel_attn.project_table(inp.table)
            # Training: each row range builds its own terms (as before the decoding memo), so the two streams of the
            # last block keep separate gradient paths into the bf16 casts — a shared one changes the rounding.
            terms = biases
        else:
            k, v = cache.write(index, slots, k, v)
            rk = cache.projected(index, self.rel_attn.project_table)
            dtype = matmul_dtype(x)
            terms = cache.memo(("bias_terms", index, dtype), lambda: self.rel_attn.bias_terms(biases, dtype))
        outs = []
        for r in parts:
            p = inp if r == slice(0, x.shape[1]) else inp.rows(r)
            a = self.rel_attn(x[:, r], k, v, rk, p.rel_index, p.seg_same, p.mask, terms, p.skew_rows)
            outs.append(self.ff(a))
        return tuple(outs)


class XLNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, H, D = cfg.d_model, cfg.n_head, cfg.d_head
        self.word_embedding = nn.Embedding(cfg.vocab_size, d)
        self.mask_emb = nn.Parameter(torch.zeros(d))  # w: the query stream's start state
        self.layers = nn.ModuleList(XLNetLayer(cfg) for _ in range(cfg.n_layer))
        n_bias = cfg.n_layer if cfg.untie_r else 1
        self.r_w_bias = nn.Parameter(torch.zeros(n_bias, H, D))  # u, the content bias (reference names kept for HF)
        self.r_r_bias = nn.Parameter(torch.zeros(n_bias, H, D))  # v, the position bias
        self.r_s_bias = nn.Parameter(torch.zeros(n_bias, H, D))  # b, the segment bias
        self.lm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.dropout = Dropout(cfg.dropout)  # an nn.Dropout with a cheaper CPU mask
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, RelAttention):
                nn.init.normal_(m.seg_embed, std=std)
        for p in (self.mask_emb, self.r_w_bias, self.r_r_bias, self.r_s_bias):
            nn.init.normal_(p, std=std)
        nn.init.zeros_(self.lm_bias)

    # -- pieces shared with the incremental decoder -------------------------------------------------------------
    def biases(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        """(content, position, segment) attention biases (the papers' u, v, b) for a layer, each [H, D]."""
        i = layer if self.cfg.untie_r else 0
        return self.r_w_bias[i], self.r_r_bias[i], self.r_s_bias[i]

    def train_query_stream(self, used: bool) -> None:
        """Whether training runs the query stream: its first state (mask_emb) is trained only then (an objective that
        never runs it leaves it frozen; DDP refuses a parameter that takes no part in the loss)."""
        self.mask_emb.requires_grad_(used)

    def logits(self, x: Tensor) -> Tensor:
        """Tied LM head: [.., d] -> [.., V]."""
        return torch.nn.functional.linear(x, self.word_embedding.weight, self.lm_bias)

    def cache_mem(self, h: Tensor, prev: Tensor | None) -> Tensor:
        """Transformer-XL memory update for one layer's input states h [B, n_mem, d] (the rows to keep)."""
        new = h if prev is None or prev.shape[1] == 0 else torch.cat([prev, h], dim=1)
        return new[:, -self.cfg.mem_len :].detach()

    # -- the one entry point -------------------------------------------------------------------------------------
    def run(self, rows: Rows, mems: list[Tensor] | None = None, cache: KVCache | None = None,
            slots: Tensor | None = None, bi_data: bool = False, need_h: bool = True) -> XLNetOutput:
        """Every block over ``rows`` (see ``Rows``) -> final token-row states h [B, N, d], query-stream states g
        [B, P, d] and (with ``mem_len`` and no cache) the new memory.

        Keys: without a cache, ``[mems; first n_keys token rows]`` at positions ``[−M..−1; pos]``. With a cache,
        the keys/values of ``[mems; first n_keys token rows]`` are written into its ``slots`` [B, M + n_keys] and
        every row attends over all the cache's slots (``rows.mask`` covers them). ``bi_data`` (pre-training's data
        augmentation) selects the forward/backward tables for the two batch halves. With token and query rows, the last
        block runs them separately, so a loss on one stream does not run the other's last block backward;
        ``need_h=False`` skips the token rows there (a decoder that only reads the query stream).
        """
        cfg = self.cfg
        B, N = rows.ids.shape
        P, M = rows.n_query, (mems[0].shape[1] if mems else 0)
        n_keys = N if rows.n_keys is None else rows.n_keys
        n_mem = n_keys if rows.n_mem is None else rows.n_mem
        x = self.dropout(self.word_embedding(rows.ids))  # [B, N, d]
        if P:
            g = self.dropout(self.mask_emb.to(x.dtype).expand(B, P, -1))  # query stream starts from w
            x = torch.cat([x, g], dim=1)  # [B, N+P, d]
        inp = self._layer_inputs(rows, M, n_keys, cache, bi_data, matmul_dtype(x))

        new_mems: list[Tensor] | None = [] if cfg.mem_len > 0 and cache is None else None
        last = ((slice(0, N), slice(N, N + P)) if need_h else (slice(N, N + P),)) if P and N else (slice(0, N + P),)
        for i, layer in enumerate(self.layers):
            mem = mems[i] if M else None
            if new_mems is not None:
                new_mems.append(self.cache_mem(x[:, :n_mem], mem))
            keys = x[:, :n_keys] if mem is None else torch.cat([mem.to(x.dtype), x[:, :n_keys]], dim=1)
            parts = last if i == cfg.n_layer - 1 else (slice(0, N + P),)
            outs = layer(x, keys, inp, self.biases(i), parts, cache, i, slots)
            x = outs[0]
        outs = tuple(self.dropout(o) for o in outs)
        if P and N:
            h, g = (outs[0], outs[1]) if need_h else (None, outs[0])
        else:
            h, g = (None, outs[0]) if P else (outs[0], None)
        return XLNetOutput(h=h, g=g, mems=new_mems)

    def _layer_inputs(self, rows: Rows, M: int, n_keys: int, cache: KVCache | None, bi_data: bool,
                      dtype: torch.dtype) -> LayerInputs:
        """Relative-position index, table, segment agreement (as 0/1 in the scores' dtype) and mask shared by every
        layer of one call."""
        cfg = self.cfg
        dev = rows.ids.device
        if cache is None:
            pos = rows.pos
            k_pos = torch.cat([torch.arange(-M, 0, device=dev).expand(pos.shape[0], M), pos[:, :n_keys]], dim=1)
            rel = RelPos.build(pos, k_pos, cfg.d_model, cfg.clamp_len, bi_data)
            index, table, skew = rel.index, self.dropout(rel.table), rel.skew_rows
            seg_k = None if rows.seg is None else torch.cat([rows.seg.new_zeros(rows.seg.shape[0], M),
                                                             rows.seg[:, :n_keys]], dim=1)
        else:
            index, table, skew, seg_k = cache.rel_index(rows.pos), None, 0, cache.seg
        seg_same = None if rows.seg is None else (rows.seg[:, :, None] == seg_k[:, None, :]).to(dtype)  # [B|1, I, J]
        return LayerInputs(index, table, skew, seg_same, rows.mask)

    # -- training / HF-convention forward -------------------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor,  # [B, T]
        seg_ids: Tensor | None = None,  # [B, T] segment ids (memory counts as segment 0)
        content_mask: Tensor | None = None,  # [B, T, T] bool, None = all visible
        query_mask: Tensor | None = None,  # [B, P, T] bool, None = all visible
        target_pos: Tensor | None = None,  # [B, P] long: run the query stream at these positions
        mems: list[Tensor] | None = None,  # per layer [B, M, d]
        bi_data: bool = False,  # the batch's second half reads its streams backward (batch["bi_backward"])
        reuse_len: int = 0,  # > 0: only the first reuse_len positions become memory (batch["reuse_len"])
        positions: Tensor | None = None,  # [B, T] long: the tokens' positions (default 0..T−1)
    ) -> XLNetOutput:
        """A segment at positions 0..T−1 (or ``positions``) after the memory, the query stream at ``target_pos``
        (a query row sits at its token's position)."""
        B, T = input_ids.shape
        dev = input_ids.device
        M = mems[0].shape[1] if mems else 0
        if bi_data and B % 2:
            raise ValueError(f"bi_data needs an even batch size (forward + backward halves), got B={B}")
        P = 0 if target_pos is None else target_pos.shape[1]
        pos = torch.arange(T, device=dev)[None] if positions is None else positions
        seg = seg_ids
        if P:
            q_pos = target_pos if positions is None else torch.gather(positions, 1, target_pos)
            pos = torch.cat([pos.expand(B, T), q_pos], dim=1)
            seg = None if seg_ids is None else torch.cat([seg_ids, torch.gather(seg_ids, 1, target_pos)], dim=1)
        mask = self._row_mask(B, T, M, content_mask, query_mask, target_pos, dev)
        n_mem = min(reuse_len, T) if reuse_len > 0 else None
        return self.run(Rows(input_ids, pos, seg, mask, n_query=P, n_mem=n_mem), mems, bi_data=bi_data)

    def _row_mask(self, B: int, T: int, M: int, content_mask: Tensor | None, query_mask: Tensor | None,
                  target_pos: Tensor | None, dev) -> Tensor | None:
        """[B|1, T+P, M+T] bool mask for all rows; memory columns always visible; uni adds the causal mask."""
        P = 0 if target_pos is None else target_pos.shape[1]
        uni = self.cfg.attn_type == "uni"
        if content_mask is None and query_mask is None and not uni:
            return None
        full = lambda n: torch.ones(B, n, T, dtype=torch.bool, device=dev)  # noqa: E731
        cm = content_mask if content_mask is not None else full(T)
        parts = [cm]
        if P:
            parts.append(query_mask if query_mask is not None else full(P))
        seg = torch.cat(parts, dim=1)  # [B, T+P, T]
        if M:
            seg = torch.cat([torch.ones(B, T + P, M, dtype=torch.bool, device=dev), seg], dim=2)
        if uni:
            causal = causal_mask(T, M, self.cfg.same_length, device=dev)  # [T, M+T]
            c_rows = causal[None].expand(B, T, M + T)
            if P:
                c_rows = torch.cat([c_rows, causal[target_pos]], dim=1)
            seg = seg & c_rows
        return seg

    def forward_hf(self, input_ids: Tensor, token_type_ids: Tensor | None = None, perm_mask: Tensor | None = None,
                   target_mapping: Tensor | None = None, mems: list[Tensor] | None = None, bi_data: bool = False,
                   reuse_len: int = 0):
        """Forward in Hugging Face's conventions -> (logits, new_mems); see ``plmgen.hf_conventions.forward_hf``."""
        from .hf_conventions import forward_hf

        return forward_hf(self, input_ids, token_type_ids, perm_mask, target_mapping, mems, bi_data, reuse_len)
