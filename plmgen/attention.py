"""Relative-position two-stream attention: the maths of one XLNet attention layer, kept apart from the model.

Legend: B batch, I query rows (content rows T, then query-stream rows P), J keys (memory M + segment T),
R relative distances in the positional table, H heads, D head dim, d model dim.

Score of query row i against key j (Transformer-XL / XLNet):
    (q_i + u)·k_j  +  (q_i + v)·W_kR r(pos_i − pos_j)  +  (q_i + b)·s_ij        scaled by 1/sqrt(D)
with u, v, b the content, position and segment biases (parameters r_w_bias, r_r_bias, r_s_bias as in the
reference code; ``BiasTerms`` holds them in the form the scores add them),
where s_ij = seg_embed[0] if rows i and j carry the same segment id else seg_embed[1].

Positions are explicit integers per row and per key, so the same code serves training (contiguous segment after
memory) and decoding (any subset of positions, any order). The positional term is computed once per layer against
a table of every needed distance, then *gathered* at (pos_i − pos_j) — the general form of Transformer-XL's
`rel_shift`, valid for query rows at arbitrary positions (the query stream's targets, a decoder's open slots).
Rows at consecutive positions (the content stream in training) read it as a strided view instead (no gather).

Speed notes (CPU, measured by ``python cli.py bench backbone``): every full-size [B,H,I,J] step after the first
matmul is in place; dropout masks come from raw random bits instead of ``bernoulli``; the dropped probabilities
are recomputed in the backward rather than stored. ``scaled_dot_product_attention`` does not help training here:
with a bias that needs a gradient, or with dropout, its CPU dispatch falls back to the unfused math kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoid_table(dists: Tensor, d_model: int) -> Tensor:
    """[R] distances (float) -> [R, d] embedding ``[sin(d·f), cos(d·f)]``, f_k = 1/10000^(2k/d)."""
    inv_freq = 1.0 / torch.pow(10000.0, torch.arange(0, d_model, 2, device=dists.device, dtype=torch.float32) / d_model)
    x = dists.float()[:, None] * inv_freq[None, :]
    return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout. On CPU the keep mask is cut from 64-bit random words, 16 bits per element: ~8x cheaper
    than ``torch.bernoulli`` (which made dropout ~10% of a CPU training step). ``p`` is rounded to a multiple of
    1/65536 and the kept values are scaled by the exact inverse keep rate, so the expectation is unchanged."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    keep, scale = keep_mask(x.shape, p)
    return torch.mul(x, keep).mul_(scale)


def dropout_add(x: Tensor, y: Tensor, p: float, training: bool) -> Tensor:
    """``x + dropout(y)`` (a residual branch) in one pass on CPU: ``addcmul(x, y, keep, value=1/keep rate)``."""
    if not training or p == 0.0:
        return x + y
    if y.device.type != "cpu":
        return x + F.dropout(y, p, True)
    keep, scale = keep_mask(y.shape, p)
    return torch.addcmul(x, y, keep, value=scale)


def keep_mask(shape: torch.Size, p: float) -> tuple[Tensor, float]:
    """CPU uint8 mask of ``shape``: 1 (kept) with probability 1 − p (p rounded), 0 (dropped); and 1 / the keep rate.

    Multiplying by a uint8 0/1 mask is ~5x faster on CPU than ``masked_fill`` with a bool one (measured on bf16
    [16, 150, 1024]: 0.30 ms vs 1.4 ms): the integer factor is converted inside the vectorised multiply loop.
    """
    n, k = math.prod(shape), round(p * 65536)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # full 64-bit range
    keep = bits.view(torch.int16)[:n].view(shape) >= k - 32768
    return keep.view(torch.uint8), 65536 / max(65536 - k, 1)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the cheaper CPU mask of :func:`dropout` (same ``p``, same train/eval switch)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


@dataclass
class RelPos:
    """Everything a layer needs for the positional term, built once per forward and shared by all layers.

    table: [R, d] sinusoids of distances d_max, d_max−1, …, d_min (or [2, R, d] with bi_data: forward table for
           the first half of the batch, the negated/backward table for the second half).
    index: [B|1, I, J] long, index into the table's R axis of distance (pos_i − pos_j).
    skew_rows: the first skew_rows rows sit at consecutive positions (the same in every batch row) against
           consecutive keys, so index[:, i, j] = index[0, 0, 0] − i + j there: their positional term is a strided
           view of the table scores (Transformer-XL's rel_shift without a copy) instead of a gather.
    """

    table: Tensor
    index: Tensor
    skew_rows: int = 0

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
        return RelPos(table=table, index=index, skew_rows=_consecutive_prefix(q_pos) if _consecutive(k_pos) else 0)


def _consecutive(pos: Tensor) -> bool:
    return _consecutive_prefix(pos) == pos.shape[1]


def _consecutive_prefix(pos: Tensor) -> int:
    """Length of the leading run where every batch row reads pos[0, 0], pos[0, 0] + 1, …"""
    ok = (pos == pos[:1, :1] + torch.arange(pos.shape[1], device=pos.device)).all(0)  # [L]
    return int(ok.long().cumprod(0).sum())


def table_scores(qv: Tensor, rk: Tensor) -> Tensor:
    """(q+v) [B,H,n,D] against every projected table row rk [H,R,D] (or [2,H,R,D], bi_data halves) -> [B,H,n,R]."""
    if rk.dim() == 3:
        # One [B·n, D] x [D, R] product per head. A broadcasting matmul against rk would first copy the table
        # B times ([B,H,D,R]); folding the batch into the rows copies only qv, which is smaller (n < R).
        B, H, n, D = qv.shape
        out = torch.matmul(qv.transpose(0, 1).reshape(H, B * n, D), rk.transpose(-1, -2))  # [H, B·n, R]
        return out.view(H, B, n, -1).transpose(0, 1)  # [B,H,n,R], a view
    B = qv.shape[0]  # bi_data: first half of the batch forward table, second half backward
    return torch.matmul(qv.unflatten(0, (2, B // 2)), rk[:, None].transpose(-1, -2)).flatten(0, 1)


def position_term(qv: Tensor, rk: Tensor, rel_index: Tensor, skew_rows: int) -> Tensor:
    """(q_i+v)·r(pos_i − pos_j) for every row i and key j -> [B,H,I,J] (rows past skew_rows are gathered)."""
    B, H, I, _ = qv.shape
    J, n = rel_index.shape[-1], min(skew_rows, I)
    parts = []
    if n:
        bd = table_scores(qv[:, :, :n], rk)  # [B,H,n,R]
        s0, s1, s2, s3 = bd.stride()  # row i reads R-entries from index[0,0,0] − i on: a row stride of R − 1
        parts.append(bd.as_strided((B, H, n, J), (s0, s1, s2 - s3, s3), bd.storage_offset() + int(rel_index[0, 0, 0]) * s3))
    if n < I:
        bd = table_scores(qv[:, :, n:], rk)  # [B,H,I−n,R]
        idx = rel_index[:, None, n:]  # [B|1,1,I−n,J]
        parts.append(torch.gather(bd, -1, idx.expand(B, H, I - n, J)))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def mask_bias(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Bool mask (True = may attend) -> additive bias: 0 or −1e30, as in the reference (its backward is free,
    unlike masked_fill's): a fully-masked row (padding) becomes exactly uniform and stays finite, in fp32 and bf16.
    Callers that run many layers over one mask convert it once and pass the bias wherever a mask is taken."""
    return torch.where(mask, torch.zeros((), dtype=dtype, device=mask.device),
                       torch.full((), -1e30, dtype=dtype, device=mask.device))


def matmul_dtype(x: Tensor) -> torch.dtype:
    """The dtype a projection of x comes out in: the autocast dtype when autocast is on for x's device."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


@dataclass
class BiasTerms:
    """A layer's attention biases u, v, b ([H, D] each) in the form the scores add them: u·s and v·s [H, 1, D]
    (s = D^−½, the scale the queries get), s+ − s− [H, D] and b·(s+ − s−) [H, 1, 1] in the queries' dtype.
    Built per call in training (they carry gradients); a decoding cache builds them once per decode."""

    content: Tensor
    position: Tensor
    seg_diff: Tensor
    seg_bias: Tensor

    @staticmethod
    def build(biases: tuple[Tensor, Tensor, Tensor], seg_embed: Tensor, dtype: torch.dtype) -> "BiasTerms":
        u, v, b = biases
        scale = u.shape[-1] ** -0.5
        ds = (seg_embed[0] - seg_embed[1]).to(dtype)  # [H, D] s+ − s−
        # (q+b)·ds = q·ds + b·ds: the bias part is one number per head, added to the small [B,H,I,1] result
        return BiasTerms(u[:, None] * scale, v[:, None] * scale, ds, (b.to(dtype) * ds).sum(-1)[:, None, None])


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rk: Tensor,
    rel_index: Tensor,
    seg_w: Tensor | None,
    same_seg: Tensor | None,
    mask: Tensor | None,
    content_term: Tensor,
    position_term_bias: Tensor,
    dropatt: float,
    training: bool,
    skew_rows: int = 0,
) -> Tensor:
    """The one attention core. Returns [B, H, I, D].

    q [B,H,I,D]; k, v [B,H,J,D]; rk [H,R,D] or [2,H,R,D] (bi_data) projected positional table;
    rel_index [B|1,I,J]; seg_w [B,H,I,1] = (q+b)·(s+ − s−) or None; same_seg [B|1,I,J] bool or 0/1 in the scores' dtype;
    mask [B|1,I,J] bool, True = may attend (None = all), or its :func:`mask_bias`;
    content_term, position_term_bias: u·s, v·s [H,1,D] (``BiasTerms``; s = D^−½);
    skew_rows: see RelPos (0 = gather every row's positional term, always correct).
    Every full-size [B,H,I,J] step after the first matmul is in place: no extra copies, nothing extra saved.
    """
    scale = q.shape[-1] ** -0.5
    q = q * scale  # scaling the queries instead of the scores saves a full pass
    score = torch.matmul(q + content_term, k.transpose(-1, -2))  # [B,H,I,J]
    score = score.add_(position_term(q + position_term_bias, rk, rel_index, skew_rows))
    if seg_w is not None:
        # (q+b)·s_ij = (q+b)·s− + [same_ij]·(q+b)·(s+ − s−); the first part is constant along the row and
        # softmax ignores it, so only the second is added (one fused pass instead of where + add).
        score = score.addcmul_(same_seg[:, None].to(score.dtype), seg_w * scale)
    if mask is not None:
        score = score.add_((mask_bias(mask, score.dtype) if mask.dtype == torch.bool else mask)[:, None])
    if not training or dropatt == 0.0:  # softmax in the score's dtype: a bf16 copy would cost a pass and memory
        return torch.matmul(torch.softmax(score, dim=-1), v)
    if score.device.type != "cpu":
        return torch.matmul(F.dropout(torch.softmax(score, dim=-1), dropatt, True), v)
    return DroppedProbValue.apply(score, v, *keep_mask(score.shape, dropatt))


class DroppedProbValue(torch.autograd.Function):
    """softmax(score) → dropout (bool mask, 1/keep scale) → @ v, for CPU training.

    Autograd would keep both the probabilities (for softmax's backward) and their dropped copy (for matmul's) in
    every layer; here only the probabilities and the 1-byte mask are kept and the dropped copy is recomputed in
    the backward: one [B,H,I,J] tensor less per layer. The 1/keep scale is applied to the [B,H,I,D] output.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, score: Tensor, v: Tensor, keep: Tensor, inv_keep: float) -> Tensor:
        prob = torch.softmax(score, dim=-1)  # [B,H,I,J]
        ctx.save_for_backward(prob, v, keep)
        ctx.inv_keep = inv_keep
        return torch.matmul(prob * keep, v) * inv_keep  # [B,H,I,D]

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad: Tensor):
        prob, v, keep = ctx.saved_tensors
        grad = grad * ctx.inv_keep  # [B,H,I,D]
        grad_v = torch.matmul((prob * keep).transpose(-1, -2), grad) if ctx.needs_input_grad[1] else None
        grad_prob = torch.matmul(grad, v.transpose(-1, -2)).mul_(keep)  # [B,H,I,J]
        return torch._softmax_backward_data(grad_prob, prob, -1, prob.dtype), grad_v, None, None


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
        self.dropout = Dropout(dropout)
        self.dropatt = dropatt

    def heads(self, x: Tensor) -> Tensor:
        """[B, L, H·D] -> [B, H, L, D]"""
        B, L, _ = x.shape
        return x.view(B, L, self.n_head, self.d_head).transpose(1, 2)

    def keys_values(self, x: Tensor, contiguous: bool = True) -> tuple[Tensor, Tensor]:
        """Layer input of the keys [B, J, d] -> k, v [B, H, J, D], contiguous unless asked not to be (a decoding
        cache copies them into its own storage anyway).

        Contiguous because the attention products read them transposed (q·kᵀ, and grad·vᵀ in the backward): a
        transposed head view of the fused projection would be copied there with a 2d-strided inner loop (~8x
        slower than this copy)."""
        k, v = self.kv(x).chunk(2, dim=-1)
        k, v = self.heads(k), self.heads(v)
        return (k.contiguous(), v.contiguous()) if contiguous else (k, v)

    def bias_terms(self, biases: tuple[Tensor, Tensor, Tensor], dtype: torch.dtype) -> BiasTerms:
        """The layer's (u, v, b) as ``BiasTerms`` for queries of ``dtype``."""
        return BiasTerms.build(biases, self.seg_embed, dtype)

    def project_table(self, table: Tensor) -> Tensor:
        """[R, d] or [2, R, d] sinusoids -> [H, R, D] or [2, H, R, D], stored as [.., H, D, R] (a transposed view):
        the attention reads it transposed (q·rᵀ), and a decoding cache reuses it at every step, so it is laid out
        once here instead of being copied inside every product."""
        r = self.r(table)
        r = r.view(*r.shape[:-1], self.n_head, self.d_head)  # [.., R, H, D]
        return r.movedim(-3, -1).contiguous().transpose(-1, -2)  # [.., H, R, D] view of [.., H, D, R]

    def forward(
        self,
        x: Tensor,
        k: Tensor,
        v: Tensor,
        rk: Tensor,
        rel_index: Tensor,
        seg_same: Tensor | None,
        mask: Tensor | None,
        biases: "BiasTerms | tuple[Tensor, Tensor, Tensor]",
        skew_rows: int = 0,
    ) -> Tensor:
        """x [B, I, d] query rows (content and/or query stream) attending over k, v -> [B, I, d]. biases: the
        layer's (u, v, b) or their ``BiasTerms`` (``bias_terms``)."""
        q = self.heads(self.q(x))  # [B,H,I,D]
        t = biases if isinstance(biases, BiasTerms) else self.bias_terms(biases, q.dtype)
        seg_w = None
        if seg_same is not None:
            seg_w = torch.matmul(q, t.seg_diff[..., None]).add_(t.seg_bias)  # [B,H,I,1]
        a = attend(q, k, v, rk, rel_index, seg_w, seg_same, mask, t.content, t.position, self.dropatt,
                   self.training, skew_rows)
        B, H, I, D = a.shape
        out = self.o(a.transpose(1, 2).reshape(B, I, H * D))
        return self.layer_norm(dropout_add(x, out, self.dropout.p, self.training))


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
        self.dropout = Dropout(dropout)
        self.act = ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        y = self.layer_2(self.dropout(self.act(self.layer_1(x))))
        return self.layer_norm(dropout_add(x, y, self.dropout.p, self.training))
