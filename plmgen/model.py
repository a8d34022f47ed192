"""XLNet backbone: embeddings, two-stream relative attention blocks, Transformer-XL memory, tied LM head.

Legend: B batch, T segment length, M memory length, P predicted positions (query-stream rows), d model dim,
V vocab. Masks are bool, True = may attend; they cover the current segment's keys ([.., T]); memory is always
visible and its columns are added here.

The two streams share every weight, so a layer runs them as one block of rows: ``x = [h (T rows); g (P rows)]``.
Queries come from all rows, keys/values from ``[mems; h]`` only — the query stream changes queries, never keys.
The model returns hidden states; losses live in ``plmgen.objectives``, decoding in ``plmgen.decoding``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attention import Dropout, FeedForward, RelAttention, RelPos
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


class XLNetLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.rel_attn = RelAttention(cfg.d_model, cfg.n_head, cfg.dropout, cfg.dropatt, cfg.layer_norm_eps)
        self.ff = FeedForward(cfg.d_model, cfg.d_inner, cfg.ff_activation, cfg.dropout, cfg.layer_norm_eps)


class XLNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, H, D = cfg.d_model, cfg.n_head, cfg.d_head
        self.word_embedding = nn.Embedding(cfg.vocab_size, d)
        self.mask_emb = nn.Parameter(torch.zeros(d))  # w: the query stream's start state
        self.layers = nn.ModuleList(XLNetLayer(cfg) for _ in range(cfg.n_layer))
        n_bias = cfg.n_layer if cfg.untie_r else 1
        self.r_w_bias = nn.Parameter(torch.zeros(n_bias, H, D))  # u
        self.r_r_bias = nn.Parameter(torch.zeros(n_bias, H, D))  # v
        self.r_s_bias = nn.Parameter(torch.zeros(n_bias, H, D))  # b
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
        """(u, v, b) for a layer, each [H, D]."""
        i = layer if self.cfg.untie_r else 0
        return self.r_w_bias[i], self.r_r_bias[i], self.r_s_bias[i]

    def layer_step(self, layer: int, x: Tensor, k: Tensor, v: Tensor, rk: Tensor, rel_index: Tensor,
                   seg_same: Tensor | None, mask: Tensor | None, skew_rows: int = 0) -> Tensor:
        """One block on rows x [B, I, d] attending over keys k, v [B, H, J, D] -> [B, I, d].

        skew_rows (optional, ``RelPos.skew_rows``): how many leading rows may read their positional term as a
        strided view instead of a gather; 0 is always correct.
        """
        blk = self.layers[layer]
        u, vb, sb = self.biases(layer)
        return blk.ff(blk.rel_attn(x, k, v, rk, rel_index, seg_same, mask, u, vb, sb, skew_rows))

    def logits(self, x: Tensor) -> Tensor:
        """Tied LM head: [.., d] -> [.., V]."""
        return torch.nn.functional.linear(x, self.word_embedding.weight, self.lm_bias)

    def cache_mem(self, h: Tensor, prev: Tensor | None) -> Tensor:
        """Transformer-XL memory update for one layer's input states h [B, T, d]."""
        if self.cfg.reuse_len > 0:
            h = h[:, : self.cfg.reuse_len]
        new = h if prev is None or prev.shape[1] == 0 else torch.cat([prev, h], dim=1)
        return new[:, -self.cfg.mem_len :].detach()

    # -- full forward ---------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor,  # [B, T]
        seg_ids: Tensor | None = None,  # [B, T] segment ids (memory counts as segment 0)
        content_mask: Tensor | None = None,  # [B, T, T] bool, None = all visible
        query_mask: Tensor | None = None,  # [B, P, T] bool, None = all visible
        target_pos: Tensor | None = None,  # [B, P] long: run the query stream at these positions
        mems: list[Tensor] | None = None,  # per layer [B, M, d]
    ) -> XLNetOutput:
        cfg = self.cfg
        B, T = input_ids.shape
        dev = input_ids.device
        M = mems[0].shape[1] if mems else 0
        if cfg.bi_data and B % 2:
            raise ValueError(f"bi_data needs an even batch size (forward + backward halves), got B={B}")

        h = self.dropout(self.word_embedding(input_ids))  # [B, T, d]
        P = 0 if target_pos is None else target_pos.shape[1]
        rows = h
        if P:
            g = self.dropout(self.mask_emb.to(h.dtype).expand(B, P, -1))
            rows = torch.cat([h, g], dim=1)  # [B, T+P, d]

        # Positions: memory keys 0..M-1, segment M..M+T-1; query rows sit at their target's position.
        k_pos = torch.arange(M + T, device=dev)[None]
        q_pos = k_pos[:, M:]
        if P:
            q_pos = torch.cat([q_pos.expand(B, T), M + target_pos], dim=1)
        rel = RelPos.build(q_pos, k_pos, cfg.d_model, cfg.clamp_len, cfg.bi_data)
        table = self.dropout(rel.table)

        seg_same = None
        if seg_ids is not None:
            seg_k = torch.cat([seg_ids.new_zeros(B, M), seg_ids], dim=1)
            seg_q = torch.cat([seg_ids, torch.gather(seg_ids, 1, target_pos)], dim=1) if P else seg_ids
            seg_same = seg_q[:, :, None] == seg_k[:, None, :]  # [B, T+P, M+T]

        mask = self._row_mask(B, T, M, content_mask, query_mask, target_pos, dev)

        outs, new_mems = self.run_layers(rows, T, T, rel, table, seg_same, mask, mems, split=T if P else None)
        return XLNetOutput(h=outs[0], g=outs[1] if P else None, mems=new_mems)

    def run_layers(self, rows: Tensor, n_keys: int, n_mem: int, rel: RelPos, table: Tensor, seg_same: Tensor | None,
                   mask: Tensor | None, mems: list[Tensor] | None,
                   split: int | None = None) -> tuple[tuple[Tensor, ...], list[Tensor] | None]:
        """Every block over rows [B, I, d] at the positions ``rel`` was built for -> (outputs, new memory).

        Keys/values come from ``[mems; rows[:, :n_keys]]`` (the content rows), the new memory from
        ``rows[:, :n_mem]``; ``mask`` [B|1, I, M+n_keys] already covers the memory columns. With ``split`` the last
        block runs rows ``[:split]`` and ``[split:]`` as two outputs, so a loss on one stream (PLM: the query stream)
        does not run the other stream's last block backward (with a shared output it would, on zero gradients).
        Outputs get the final dropout. Shared by ``forward`` and objectives with their own row layouts (mask-plm).
        """
        cfg = self.cfg
        M = mems[0].shape[1] if mems else 0
        new_mems: list[Tensor] | None = [] if cfg.mem_len > 0 else None
        for i in range(cfg.n_layer):
            mem = mems[i] if M else None
            if new_mems is not None:
                new_mems.append(self.cache_mem(rows[:, :n_mem], mem))
            keys = rows[:, :n_keys] if mem is None else torch.cat([mem.to(rows.dtype), rows[:, :n_keys]], dim=1)
            k, v = self.layers[i].rel_attn.keys_values(keys)
            rk = self.layers[i].rel_attn.project_table(table)
            if i < cfg.n_layer - 1 or split is None:
                rows = self.layer_step(i, rows, k, v, rk, rel.index, seg_same, mask, rel.skew_rows)
                continue
            parts = (slice(0, split), slice(split, rows.shape[1]))
            return tuple(self.dropout(self.layer_step(i, rows[:, r], k, v, rk, rel.index[:, r], _sel(seg_same, r),
                                                      _sel(mask, r), max(min(rel.skew_rows, r.stop) - r.start, 0)))
                         for r in parts), new_mems
        return (self.dropout(rows),), new_mems

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
                   target_mapping: Tensor | None = None, mems: list[Tensor] | None = None):
        """Forward in Hugging Face's conventions -> (logits, new_mems); see ``plmgen.hf.forward_hf``."""
        from .hf import forward_hf

        return forward_hf(self, input_ids, token_type_ids, perm_mask, target_mapping, mems)


def _sel(x: Tensor | None, rows: slice) -> Tensor | None:
    """Rows of a [B|1, I, J] mask (or None)."""
    return None if x is None else x[:, rows]
