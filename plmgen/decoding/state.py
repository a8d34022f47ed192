"""What a decode keeps per row, and the token rules every search shares.

Legend: R rows (examples × beams), L target slots, F filled rows per step, V vocab.

``Hypothesis`` is what a decode returns per example; ``RowState`` the per-row tensors a search updates as it fills
positions; ``Bans`` and ``sampling_probs`` turn the model's log-probs into what greedy, beam, sampling, speculative
decoding and refinement choose from. The searches (``search``, ``speculative``, ``refine``) import this module and
not each other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..config import DecodeConfig


@dataclass
class Hypothesis:
    tokens: list[int]  # target ids in position order
    logprob: float  # sum of the chosen tokens' log-probabilities (chain-rule score for one position per step)
    token_logprobs: list[float]  # per position, log-probability when it was (last) filled
    trace: list[list[int]] = field(default_factory=list)  # target indices filled at each step, in fill order
    steps: int = 0  # decoding steps (+ refinement iterations)
    passes: int = 0  # forward passes of the decoder this example took part in (speculative: < steps)

    @property
    def avg_logprob(self) -> float:
        """Length-normalised score (for choosing among target lengths, as in Mask-Predict's length beam)."""
        return self.logprob / max(1, len(self.tokens))


@dataclass
class RowState:
    """Per-row decoding state (rows = examples × beams). Updating it never waits for the device: the fill order
    is logged as tensors and turned into per-row traces by :meth:`hypotheses`, and a position filled twice (a
    decoding bug) is flagged on the device and raised at the latest every L fills and when the hypotheses are read.
    """

    tokens: Tensor  # [R, L] long
    tok_lp: Tensor  # [R, L] float
    open: Tensor  # [R, L] bool
    n_filled: Tensor  # [R] long
    steps: Tensor  # [R] long
    passes: Tensor  # [R] long
    logprob: Tensor  # [R] float, sum of the chosen tokens' log-probabilities
    log: list = field(default_factory=list)  # ("fill", pos [R, F], ok [R, F]) / ("rows", rows [R], None), in order
    twice: Tensor | None = None  # [] bool: some position was filled twice

    @staticmethod
    def new(lengths: Tensor, pad_id: int) -> "RowState":
        R, L = lengths.shape[0], int(lengths.max())
        dev = lengths.device
        return RowState(tokens=torch.full((R, L), pad_id, dtype=torch.long, device=dev),
                        tok_lp=torch.zeros(R, L, device=dev), open=torch.arange(L, device=dev)[None] < lengths[:, None],
                        n_filled=torch.zeros(R, dtype=torch.long, device=dev),
                        steps=torch.zeros(R, dtype=torch.long, device=dev),
                        passes=torch.zeros(R, dtype=torch.long, device=dev), logprob=torch.zeros(R, device=dev),
                        twice=torch.zeros((), dtype=torch.bool, device=dev))

    def reorder(self, rows: Tensor) -> None:
        for f in ("tokens", "tok_lp", "open", "n_filled", "steps", "passes", "logprob"):
            setattr(self, f, getattr(self, f)[rows])
        self.log.append(("rows", rows, None))

    def fill(self, pos: Tensor, tok: Tensor, lp: Tensor, ok: Tensor) -> None:
        """Record tokens tok [R, F] with log-probs lp at target indices pos where ok (one-hot over the slots: no
        index lists, no wait for the device)."""
        hit = (pos[:, :, None] == torch.arange(self.open.shape[1], device=pos.device)) & ok[:, :, None]  # [R, F, L]
        filled = hit.any(1)  # [R, L]
        self.twice |= ((hit.sum(1) > 1) | (filled & ~self.open)).any()
        zero = torch.zeros((), dtype=self.tok_lp.dtype, device=pos.device)  # where, not a product: lp may be −inf
        self.tokens = torch.where(filled, torch.where(hit, tok[:, :, None], 0).sum(1), self.tokens)
        self.tok_lp = torch.where(filled, torch.where(hit, lp[:, :, None].to(zero.dtype), zero).sum(1), self.tok_lp)
        self.open = self.open & ~filled
        self.n_filled += ok.sum(1)
        self.steps += ok.any(1)
        self.logprob += torch.where(ok, lp, torch.zeros_like(lp)).sum(1)
        self.log.append(("fill", pos, ok))
        if len(self.log) % max(1, self.open.shape[1]) == 0:  # a position filled twice may never close: stop a loop
            self.check()

    def check(self) -> None:
        if bool(self.twice):
            raise RuntimeError("decoding bug: a position was filled twice")

    def traces(self) -> list[list[list[int]]]:
        """Per row, the target indices filled at each step (in fill order), read back from the log once."""
        R = self.tokens.shape[0]
        events = [(kind, a.tolist(), None if b is None else b.tolist()) for kind, a, b in self.log]
        out = []
        for r in range(R):
            row, steps = r, []
            for kind, a, b in reversed(events):
                if kind == "rows":
                    row = a[row]
                elif any(b[row]):
                    steps.append([x for x, keep in zip(a[row], b[row]) if keep])
            out.append(steps[::-1])
        return out

    def hypotheses(self, lengths: list[int], rows: list[int] | None = None) -> list[Hypothesis]:
        """One ``Hypothesis`` per row (or per row of ``rows``) with the given target lengths."""
        self.check()
        rows = list(range(self.tokens.shape[0])) if rows is None else rows
        traces = self.traces()
        tokens, lps, logprob = self.tokens.tolist(), self.tok_lp.tolist(), self.logprob.tolist()
        steps, passes = self.steps.tolist(), self.passes.tolist()
        return [Hypothesis(tokens=tokens[r][:n], logprob=logprob[r], token_logprobs=lps[r][:n], trace=traces[r],
                           steps=steps[r], passes=passes[r]) for r, n in zip(rows, lengths)]


@dataclass(frozen=True)
class Bans:
    """The token rules of a decode. ``always``: ids never generated (the tokenizer's special ids). ``last``: ids
    never placed in a row's last target slot — pieces that detokenize to whitespace only (``Tokenizer.blank_ids``):
    sentencepiece strips trailing whitespace, so no training target ends in one, and a one-slot target filled with
    one would be an empty translation."""

    always: tuple[int, ...] = ()
    last: tuple[int, ...] = ()

    def apply(self, logp: Tensor, q_pos: Tensor | None = None, last_slot: Tensor | None = None,
              inplace: bool = False) -> Tensor:
        """logp [R, .., V] -> a copy with the banned ids at −inf (``logp`` itself is untouched; with ``inplace``,
        ``logp`` itself, for a caller that reads the model's log-probs only at tokens it chose from the result).
        q_pos [R, ..] the target slot each row of logp predicts and last_slot [R] each row's last slot (both needed
        for ``last``)."""
        if not self.always and not (self.last and q_pos is not None):
            return logp
        logp = logp if inplace else logp.clone()
        if self.always:
            logp[..., list(self.always)] = float("-inf")
        if self.last and q_pos is not None:
            at_end = q_pos == last_slot.view(-1, *[1] * (q_pos.dim() - 1))  # [R, ..]
            ids = torch.tensor(self.last, device=logp.device)
            logp[..., ids] = logp[..., ids].masked_fill(at_end[..., None], float("-inf"))
        return logp


def sampling_probs(lp: Tensor, cfg: DecodeConfig) -> Tensor:
    """Banned log-probs [.., V] -> the sampling distribution [.., V] (fp32) after temperature, top-k and top-p."""
    x = lp / cfg.temperature
    if cfg.top_k:
        kth = x.topk(min(cfg.top_k, x.shape[-1]), dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sx, si = x.sort(dim=-1, descending=True)
        p = sx.softmax(-1)
        drop = p.cumsum(-1) - p >= cfg.top_p  # keep the smallest prefix whose mass reaches top_p
        x = x.masked_fill(drop.scatter(-1, si, drop), float("-inf"))
    return x.float().softmax(-1)
