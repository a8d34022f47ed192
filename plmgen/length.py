"""Target-length prediction: a classifier over 1..max_len from the mean-pooled source content states.

Legend: B batch, T length, d model dim, N length candidates, L max_len (classes).

plmgen's seq2seq layout has no <eos>: the number of target slots is fixed before decoding (Mask-Predict style).
The head reads the source's content stream (which never sees the target, so training and generation read the same
states), is trained jointly with the translation loss (term ``length``), and drives the generation modes
``predict`` (argmax), ``--length-beam N`` (decode the top-N lengths, keep the best length-normalised
log-probability), ``oracle`` (reference length, for analysis) and a fixed ``N``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmgen.errors import UserError


class LengthHead(nn.Module):
    """Class k (0-based) means target length k+1; longer targets fall into the last class (they are truncated).

    ``offset``: the head scores the *difference* target length − source length (2·max_len + 1 classes) and maps it
    onto absolute lengths per example. A mean-pooled state carries no count of the source tokens, so an absolute
    classifier must guess the length from content alone (its argmax was off by several tokens on lo-de-en and the
    decoder then padded with repeated words); "about as long as the source, ± a learned shift" is what the offset
    head starts from. Its outputs are the same absolute-length logits [B, L], so losses and decoding are unchanged.
    """

    def __init__(self, d_model: int, max_len: int, offset: bool = False):
        super().__init__()
        self.max_len, self.offset = max_len, offset
        self.proj = nn.Linear(d_model, 2 * max_len + 1 if offset else max_len)

    def forward(self, h: Tensor, src_mask: Tensor) -> Tensor:
        """h [B, T, d] content states, src_mask [B, T] bool (source positions) -> logits [B, L]."""
        m = src_mask.to(h.dtype)[..., None]  # [B, T, 1]
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # [B, d]
        z = self.proj(pooled).float()  # [B, L] or [B, 2L+1] offsets −L..L
        if not self.offset:
            return z
        n = torch.arange(1, self.max_len + 1, device=z.device)[None]  # [1, L] absolute lengths
        cls = (n - src_mask.sum(1, keepdim=True) + self.max_len).clamp(0, 2 * self.max_len)  # [B, L] offset class
        return z.gather(1, cls)

    def loss(self, logits: Tensor, tgt_len: Tensor) -> Tensor:
        """Mean cross-entropy against the true lengths tgt_len [B] (>= 1)."""
        return F.cross_entropy(logits, self.classes(tgt_len))

    def classes(self, lengths: Tensor) -> Tensor:
        return lengths.clamp(1, self.max_len).long() - 1


def top_lengths(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k most likely lengths [B, N] (best first) and their log-probabilities [B, N]."""
    k = min(k, logits.shape[-1])
    lp = logits.log_softmax(-1)
    vals, idx = lp.topk(k, dim=-1)
    return idx + 1, vals


def select_best(scores: Tensor, lengths: Tensor) -> Tensor:
    """Length beam choice: index [B] of the candidate with the best per-token log-probability.

    scores [B, N] summed token log-probabilities of each decoded candidate, lengths [B, N] its length. Normalising
    by length stops the beam from always preferring the shortest candidate (fewer negative terms in the sum).
    """
    return (scores / lengths.clamp_min(1).to(scores.dtype)).argmax(-1)


@dataclass(frozen=True)
class LengthMode:
    kind: str  # "predict" | "oracle" | "fixed"
    n: int = 0  # the fixed length (kind == "fixed")

    @property
    def label(self) -> str:
        return str(self.n) if self.kind == "fixed" else self.kind


def parse_length_mode(value: str | int, flag: str = "--length") -> LengthMode:
    """``predict`` | ``oracle`` | a positive integer -> LengthMode; anything else is a UserError naming the flag."""
    text = str(value).strip().lower()
    if text in ("predict", "oracle"):
        return LengthMode(text)
    try:
        n = int(text)
    except ValueError:
        raise UserError(f"{flag} must be 'predict', 'oracle' or a positive integer, got {value!r}") from None
    if n < 1:
        raise UserError(f"{flag} must be a positive length, got {n}")
    return LengthMode("fixed", n)
