"""Relative-position two-stream attention: the maths of one XLNet attention layer, kept apart from the model.

Legend: B batch, I query rows (content rows T, then query-stream rows P), J keys (memory M + segment T),
R relative distances in the positional table, H heads, D head dim, d model dim.

Score of query row i against key j (Transformer-XL / XLNet):
    (q_i + u)·k_j  +  (q_i + v)·W_kR r(pos_i − pos_j)  +  (q_i + b)·s_ij        scaled by 1/sqrt(D)
where s_ij = seg_embed[0] if rows i and j carry the same segment id else seg_embed[1].

Positions are explicit integers per row and per key, so the same code serves training (contiguous segment after
memory) and decoding (any subset of positions, any order). The positional term is computed once per layer against
a table of every needed distance, then *gathered* at (pos_i − pos_j) — the general form of Transformer-XL's
`rel_shift`, valid for query rows at arbitrary positions (the query stream's targets, a decoder's open slots).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoid_table(dists: Tensor, d_model: int) -> Tensor:
    """[R] distances (float) -> [R, d] embedding ``[sin(d·f), cos(d·f)]``, f_k = 1/10000^(2k/d)."""
    inv_freq = 1.0 / torch.pow(10000.0, torch.arange(0, d_model, 2, device=dists.device, dtype=torch.float32) / d_model)
    x = dists.float()[:, None] * inv_freq[None, :]
    return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


@dataclass
class RelPos:
    """Everything a layer needs for the positional term, built once per forward and shared by all layers.

    table: [R, d] sinusoids of distances d_max, d_max−1, …, d_min (or [2, R, d] with bi_data: forward table for
           the first half of the batch, the negated/backward table for the second half).
    index: [B|1, I, J] long, index into the table's R axis of distance (pos_i − pos_j).
    """

    table: Tensor
    index: Tensor

    @staticmethod
    def build(q_pos: Tensor, k_pos: Tensor, d_model: int, clamp_len: int = -1, bi_data: bool = False) -> "RelPos":
        """q_pos [B|1, I], k_pos [B|1, J] integer positions (memory keys count from 0 before the segment)."""
        dist = q_pos[:, :, None] - k_pos[:, None, :]  # [B|1, I, J]
        d_max, d_min = int(dist.max()), int(dist.min())
        dists = torch.arange(d_max, d_min - 1, -1, device=q_pos.device)  # descending, like the reference
        index = d_max - dist
        tables = [dists, -dists] if bi_data else [dists]
        if clamp_len > 0:  # as in the reference, clamp_len <= 0 means no clamping
            tables = [t.clamp(-clamp_len, clamp_len) for t in tables]
        table = torch.stack([sinusoid_table(t, d_model) for t in tables]) if bi_data else sinusoid_table(tables[0], d_model)
        return RelPos(table=table, index=index)


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rk: Tensor,
    rel_index: Tensor,
    seg_e: Tensor | None,
    same_seg: Tensor | None,
    mask: Tensor | None,
    u: Tensor,
    vb: Tensor,
    dropatt: float,
    training: bool,
) -> Tensor:
    """The one attention core. Returns [B, H, I, D].

    q [B,H,I,D]; k, v [B,H,J,D]; rk [H,R,D] or [2,H,R,D] (bi_data) projected positional table;
    rel_index [B|1,I,J]; seg_e [B,H,I,2] = (q+b)·s for s in (same, different) or None; same_seg [B|1,I,J] bool;
    mask [B|1,I,J] bool, True = may attend (None = all); u, vb [H,D] content / position biases.
    """
    B, H, I, D = q.shape
    scale = D ** -0.5
    ac = torch.matmul(q + u[:, None], k.transpose(-1, -2))  # [B,H,I,J]
    qv = q + vb[:, None]
    if rk.dim() == 4:  # bi_data: first half of the batch forward table, second half backward
        half = B // 2
        bd_full = torch.matmul(qv.view(2, half, H, I, D), rk[:, None].transpose(-1, -2)).view(B, H, I, -1)
    else:
        bd_full = torch.matmul(qv, rk.transpose(-1, -2))  # [B,H,I,R]
    idx = rel_index[:, None].expand(B, H, I, rel_index.shape[-1])
    score = ac + torch.gather(bd_full, -1, idx)  # [B,H,I,J]
    if seg_e is not None:
        same = same_seg[:, None]
        score = score + torch.where(same, seg_e[..., :1], seg_e[..., 1:])
    score = score * scale
    if mask is not None:
        # A finite fill keeps fully-masked rows (padding) finite: they become uniform, as in the reference.
        score = score.masked_fill(~mask[:, None], torch.finfo(score.dtype).min)
    prob = torch.softmax(score, dim=-1, dtype=torch.float32).to(v.dtype)
    prob = F.dropout(prob, p=dropatt, training=training)
    return torch.matmul(prob, v)


class RelAttention(nn.Module):
    """Parameters of one relative attention layer (no biases on projections, as in XLNet) + post-LN residual."""

    def __init__(self, d_model: int, n_head: int, dropout: float, dropatt: float, eps: float):
        super().__init__()
        self.n_head, self.d_head = n_head, d_model // n_head
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)  # fused key/value projection
        self.r = nn.Linear(d_model, d_model, bias=False)  # W_kR
        self.o = nn.Linear(d_model, d_model, bias=False)
        self.seg_embed = nn.Parameter(torch.zeros(2, n_head, self.d_head))  # s+ (same segment), s− (different)
        self.layer_norm = nn.LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.dropatt = dropatt

    def heads(self, x: Tensor) -> Tensor:
        """[B, L, H·D] -> [B, H, L, D]"""
        B, L, _ = x.shape
        return x.view(B, L, self.n_head, self.d_head).transpose(1, 2)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Layer input of the keys [B, J, d] -> k, v [B, H, J, D] (what a decoding cache stores)."""
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.heads(k), self.heads(v)

    def project_table(self, table: Tensor) -> Tensor:
        """[R, d] or [2, R, d] sinusoids -> [H, R, D] or [2, H, R, D]."""
        r = self.r(table)
        return r.view(*r.shape[:-1], self.n_head, self.d_head).transpose(-2, -3)

    def forward(
        self,
        x: Tensor,
        k: Tensor,
        v: Tensor,
        rk: Tensor,
        rel_index: Tensor,
        seg_same: Tensor | None,
        mask: Tensor | None,
        u: Tensor,
        vb: Tensor,
        sb: Tensor | None,
    ) -> Tensor:
        """x [B, I, d] query rows (content and/or query stream) attending over k, v -> [B, I, d]."""
        q = self.heads(self.q(x))  # [B,H,I,D]
        seg_e = None
        if seg_same is not None:
            seg_e = torch.matmul(q + sb[:, None], self.seg_embed.permute(1, 2, 0).to(q.dtype))  # [B,H,I,2]
        a = attend(q, k, v, rk, rel_index, seg_e, seg_same, mask, u, vb, self.dropatt, self.training)
        B, H, I, D = a.shape
        out = self.o(a.transpose(1, 2).reshape(B, I, H * D))
        return self.layer_norm(x + self.dropout(out))


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class FeedForward(nn.Module):
    """Position-wise FFN with post-LN residual."""

    def __init__(self, d_model: int, d_inner: int, activation: str, dropout: float, eps: float):
        super().__init__()
        self.layer_1 = nn.Linear(d_model, d_inner)
        self.layer_2 = nn.Linear(d_inner, d_model)
        self.layer_norm = nn.LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.act = ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        y = self.dropout(self.layer_2(self.dropout(self.act(self.layer_1(x)))))
        return self.layer_norm(x + y)
