"""Pure functions: factorization orders -> attention masks and target mappings.

Legend: B batch, T segment length, P predicted positions. Masks are bool, True = may attend.

A factorization order is given as a *rank* per position: rank −1 marks context (visible to every position, sees
only context), ranks 0, 1, 2, … give the order in which targets are predicted. Position i may attend to j iff
    rank[j] == −1 and rank[i] == −1            (context sees context)
 or rank[j] == −1 and rank[i] >= 0             (targets see all context)
 or 0 <= rank[j] < rank[i]                     (targets see earlier targets)
and j is not padding. The content stream additionally sees itself (diagonal re-opened); the query stream does not.
Equal ranks among targets mean "predicted in parallel": they do not see each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class StreamMasks:
    content: Tensor  # [B, T, T] bool
    query: Tensor  # [B, P, T] bool, rows of the predicted positions
    target_pos: Tensor  # [B, P] long, position of each prediction (padding rows point at 0)
    target_valid: Tensor  # [B, P] bool, False for padding rows of P
    target_mapping: Tensor  # [B, P, T] bool one-hot (HF's target_mapping convention, True = prediction p is at j)


def perm_attention(rank: Tensor, valid: Tensor | None = None) -> Tensor:
    """rank [B, T] long (−1 = context) -> [B, T, T] bool: i may attend j, *without* the diagonal re-opened."""
    ri, rj = rank[:, :, None], rank[:, None, :]
    ctx_j = rj < 0
    allowed = (ctx_j & (ri >= 0)) | (ctx_j & (ri < 0)) | ((rj >= 0) & (rj < ri))
    if valid is not None:
        allowed = allowed & valid[:, None, :]
    return allowed


def content_mask(rank: Tensor, valid: Tensor | None = None) -> Tensor:
    """[B, T, T]: the permutation mask with the diagonal re-opened (a token sees itself)."""
    T = rank.shape[1]
    eye = torch.eye(T, dtype=torch.bool, device=rank.device)[None]
    return perm_attention(rank, valid) | eye


def target_positions(rank: Tensor, num_predict: int | None = None) -> tuple[Tensor, Tensor]:
    """Positions with rank >= 0, listed in order of rank, left-aligned and padded to P columns.

    Returns target_pos [B, P] long (padding = 0) and target_valid [B, P] bool. With ``num_predict`` nothing is read
    back from the device (a row with more targets fails an asynchronous device assert); without it P is the largest
    row count, which the host has to read.
    """
    B, T = rank.shape
    is_tgt = rank >= 0
    counts = is_tgt.sum(1)
    if num_predict is None:
        P = int(counts.max()) if B else 0
    else:
        P = num_predict
        if B:
            torch._assert_async(counts.max() <= P, "target_positions: num_predict is smaller than a row's targets")
    big = torch.iinfo(torch.long).max
    key = torch.where(is_tgt, rank, torch.full_like(rank, big))
    order = torch.sort(key, dim=1, stable=True).indices[:, :P]  # targets first, by rank
    if order.shape[1] < P:
        order = torch.cat([order, order.new_zeros(B, P - order.shape[1])], dim=1)
    valid = torch.arange(P, device=rank.device)[None, :] < counts[:, None]
    return torch.where(valid, order, torch.zeros_like(order)), valid


def stream_masks(rank: Tensor, valid: Tensor | None = None, num_predict: int | None = None) -> StreamMasks:
    """Everything the two-stream model needs for a factorization order: content/query masks + target mapping."""
    B, T = rank.shape
    perm = perm_attention(rank, valid)
    tpos, tvalid = target_positions(rank, num_predict)
    query = torch.gather(perm, 1, tpos[:, :, None].expand(B, tpos.shape[1], T)) & tvalid[:, :, None]
    mapping = torch.zeros(B, tpos.shape[1], T, dtype=torch.bool, device=rank.device)
    mapping.scatter_(2, tpos[:, :, None], tvalid[:, :, None])
    return StreamMasks(content=content_mask(rank, valid), query=query, target_pos=tpos, target_valid=tvalid,
                       target_mapping=mapping)


def causal_mask(T: int, M: int = 0, same_length: bool = False, device=None) -> Tensor:
    """[T, M+T] uni-directional mask: row i sees memory and positions <= i; same_length keeps M+1 keys per row."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(M + T, device=device)[None, :]
    allowed = j <= i + M
    if same_length:
        allowed = allowed & (j >= i)
    return allowed


def ranks_from_order(order: Tensor, T: int, context: Tensor | None = None) -> Tensor:
    """order [B, N] positions in prediction order -> rank [B, T] (positions not in the order get −1).

    ``context`` [B, T] bool, optional: positions forced to −1 even if listed (e.g. a fixed source).
    """
    B, N = order.shape
    rank = torch.full((B, T), -1, dtype=torch.long, device=order.device)
    rank.scatter_(1, order, torch.arange(N, device=order.device).expand(B, N).contiguous())
    if context is not None:
        rank = torch.where(context, torch.full_like(rank, -1), rank)
    return rank
