"""Factorization-order strategies: which open target positions to query and which to fill at each step.

Legend: B batch rows, L target slots, Q queried rows this step, F rows filled this step, V vocab.

Every strategy answers two questions per step (positions are target indices 0..L−1):
- ``queries(open, n_filled, plan) -> (q_pos [B, Q], q_ok [B, Q])``: the positions whose predictive distribution
  is needed. A *fixed* order (its positions known in advance) asks only for its next k positions — that is what
  makes left-to-right decoding cheap; an *adaptive* order asks for every open position.
- ``choose(logp [B, Q, V], q_ok) -> (sel [B, F], sel_ok [B, F])``: which queried rows to fill, in fill order
  (column order = rank order inside the step).

Fixed: ``l2r``, ``r2l``, ``random`` (seeded), ``middle-out``, ``balanced-tree`` (middle of the largest open
interval first). Adaptive ("easy-first"): ``confidence`` (highest max-probability), ``entropy`` (lowest entropy),
``margin`` (largest top-1 − top-2 log-prob gap), ``anchored`` (confidence discounted by the share of its word's
probability that the neighbouring open slots take). Parallel: any order fills ``k`` positions per step (fixed orders:
their next k; adaptive: the k best); ``threshold`` fills every open position whose max-probability exceeds p (at
least the best one); ``parallel`` and ``threshold`` are the confidence order with k / p set.

Window: an adaptive order with ``window = W`` > 0 queries and chooses among the W leftmost open positions only
(easy-first inside a sliding window; W = 1 is left to right, W = 0 every open position). It measures how much
adaptivity a model can afford, and it queries W rows per step instead of every open one.
Ahead penalty: an adaptive order with ``ahead = λ`` > 0 ranks a slot by its score minus λ per open slot between it
and the decided text on its left (the nearest decided slot, or the source's ``<sep>``): easy-first with a prior for
continuing what is written — every open slot stays a candidate (a soft window; λ → ∞ is left to right). Parallel
fills rank a step's k slots by the distances at the start of the step.
Empty slots: with ``empty_id`` (a checkpoint fine-tuned with ``Seq2SeqConfig.empty_slots``), an adaptive order
decides a slot whose likeliest token is the empty one only when no open slot's likeliest token is a word. Training
puts the empty slots at random places, so a high empty probability says that the model cannot tell where the spare
slot goes, not that it knows this slot; ranked by it, easy-first wrote empties into the slots of the words it was
unsure of ("Calculates the sum." -> "Calculates."). Which token a slot gets is unchanged (nothing is banned).
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Sequence

import torch
from torch import Tensor

from ..errors import UserError


def example_generator(seed: int, example: int) -> torch.Generator:
    """The random stream of one input example: a pure function of (seed, the example's index in the input), so
    random orders and sampled tokens never depend on batching, ``--limit`` or the other sentences."""
    digest = hashlib.sha256(f"plmgen-decode:{seed}:{example}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def ahead_error(order: str, ahead) -> str | None:
    """Why an ahead penalty ``ahead`` cannot go with ``order`` (it needs an adaptive order and a finite λ >= 0)."""
    if isinstance(ahead, bool) or not isinstance(ahead, (int, float)) or not 0 <= ahead < float("inf"):
        return f"an ahead penalty must be a finite number >= 0, got {ahead!r}"
    return needs_adaptive("an ahead penalty", order) if ahead else None


def needs_adaptive(what: str, order: str) -> str | None:
    """"<what> needs an adaptive order (the list), not <order>" when ``order`` is a fixed one, else None."""
    if ORDERS[order].adaptive:
        return None
    return f"{what} needs an adaptive order ({', '.join(n for n, o in ORDERS.items() if o.adaptive)}), not {order!r}"


def slots_ahead(open_: Tensor, q_pos: Tensor) -> Tensor:
    """open_ [B, L] (True = open), q_pos [B, Q] -> [B, Q] float: how many open slots lie between each queried slot
    and the nearest decided slot on its left (or the source's ``<sep>`` before slot 0); 0 continues decided text."""
    pos = torch.arange(open_.shape[1], device=open_.device).expand_as(open_)
    last = torch.where(open_, -1, pos).cummax(1).values  # [B, L] the last decided slot at or before each slot
    return (q_pos - last.gather(1, q_pos) - 1).float()


def window_error(order: str, window) -> str | None:
    """Why ``window`` cannot go with ``order`` (a window needs an adaptive order and an int W >= 0), else None."""
    if not isinstance(window, int) or window < 0:
        return f"a window W must be an int >= 0, got {window!r}"
    return needs_adaptive("a window", order) if window else None


class Order:
    name = ""
    adaptive = False

    def __init__(self, k: int = 1, threshold: float | None = None, seed: int = 0, window: int = 0,
                 empty_id: int | None = None, ahead: float = 0.0):
        if k < 1:
            raise UserError(f"--order {self.name}@{k}: positions per step must be >= 1")
        if threshold is not None and (err := needs_adaptive("a threshold", self.name)) is not None:
            raise UserError(f"--order {self.name}@{threshold}: {err}")
        if (err := window_error(self.name, window)) is not None:
            raise UserError(f"--order {self.name}@w{window}: {err}")
        if (err := ahead_error(self.name, ahead)) is not None:
            raise UserError(f"--order {self.name}@d{ahead}: {err}")
        self.k, self.threshold, self.seed, self.window, self.empty_id = k, threshold, seed, window, empty_id
        self.ahead = float(ahead)

    def init(self, lengths: list[int], L: int, device, examples: Sequence[int] | None = None) -> Tensor | None:
        """Per-example plan [B, L] (fixed orders; padded with 0) or None. ``examples``: each row's index in the
        input (default 0..B-1), which with the seed picks the row's own random stream (:func:`example_generator`)."""
        return None


class FixedOrder(Order):
    """An order known before decoding: a permutation of 0..L_b−1 per example."""

    def permutation(self, n: int, gen: torch.Generator) -> list[int]:
        raise NotImplementedError

    def init(self, lengths: list[int], L: int, device, examples: Sequence[int] | None = None) -> Tensor:
        examples = range(len(lengths)) if examples is None else examples
        plan = torch.zeros(len(lengths), L, dtype=torch.long)
        for b, (n, ex) in enumerate(zip(lengths, examples, strict=True)):
            perm = self.permutation(n, example_generator(self.seed, ex))
            assert sorted(perm) == list(range(n)), f"{self.name}: not a permutation of 0..{n - 1}"
            plan[b, :n] = torch.tensor(perm, dtype=torch.long)
        return plan.to(device)

    def queries(self, open_: Tensor, n_filled: Tensor, plan: Tensor) -> tuple[Tensor, Tensor]:
        L = plan.shape[1]
        col = n_filled[:, None] + torch.arange(self.k, device=plan.device)[None]  # [B, k] next plan entries
        ok = col < open_.sum(1)[:, None] + n_filled[:, None]  # within this example's length
        return plan.gather(1, col.clamp(max=L - 1)) * ok, ok

    def choose(self, logp: Tensor, q_ok: Tensor) -> tuple[Tensor, Tensor]:
        return torch.arange(q_ok.shape[1], device=q_ok.device).expand_as(q_ok), q_ok

    def rank_positions(self, logp: Tensor, q_ok: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """Beam search: candidate positions per row — for a fixed order, its next position only."""
        return self.choose(logp, q_ok)


class L2R(FixedOrder):
    name = "l2r"

    def permutation(self, n, gen):
        return list(range(n))


class R2L(FixedOrder):
    name = "r2l"

    def permutation(self, n, gen):
        return list(range(n - 1, -1, -1))


class RandomOrder(FixedOrder):
    name = "random"

    def permutation(self, n, gen):
        return torch.randperm(n, generator=gen).tolist()


class MiddleOut(FixedOrder):
    """Middle first, then alternating right and left: 5 -> 2, 3, 1, 4, 0."""

    name = "middle-out"

    def permutation(self, n, gen):
        mid, out = (n - 1) // 2, []
        for d in range(n):
            for p in ((mid + d, mid - d) if d else (mid,)):
                if 0 <= p < n and len(out) < n:
                    out.append(p)
        return out


class BalancedTree(FixedOrder):
    """Binary split: the middle of the largest open interval first (ties: leftmost) — a level-order tree walk."""

    name = "balanced-tree"

    def permutation(self, n, gen):
        heap, out = [(-n, 0, n)], []
        while heap:
            _, lo, hi = heapq.heappop(heap)
            mid = (lo + hi - 1) // 2
            out.append(mid)
            for a, b in ((lo, mid), (mid + 1, hi)):
                if b > a:
                    heapq.heappush(heap, (-(b - a), a, b))
        return out


EMPTY_LAST = 1e4  # subtracted from a score: beyond any log-probability, entropy or margin gap of a finite model


class PriorityOrder(Order):
    """Adaptive: query every open position, fill the ones of highest ``priority`` (higher = fill first)."""

    adaptive = True
    _ahead: Tensor | None = None  # [B, Q] slots_ahead of the last ``queries`` (with an ahead penalty)

    def priority(self, logp: Tensor) -> Tensor:
        raise NotImplementedError

    def score(self, logp: Tensor, q_ok: Tensor | None = None) -> Tensor:
        """What the order ranks slots by: ``priority``, with the slots whose likeliest token is the empty one after
        every other (their priority order kept among themselves). logp [.., Q, V] -> [.., Q]; q_ok [.., Q] marks
        the real rows (open slots in left-to-right order; an order reading its neighbours needs it)."""
        s = self.priority(logp) if q_ok is None else self.priority_in_row(logp, q_ok)
        if self.ahead:  # the distances of this step's queried slots (``queries``)
            if self._ahead is None or self._ahead.shape != s.shape:
                raise RuntimeError(f"order {self.name} with an ahead penalty ranks only the rows of its last queries()")
            s = s - self.ahead * self._ahead.to(s.dtype)
        if self.empty_id is None:
            return s
        s = s.double()  # fp64: a shift by 1e4 keeps the fp32 scores' order and distances exactly
        return torch.where(self.empty_first(logp), s - EMPTY_LAST, s)

    def priority_in_row(self, logp: Tensor, q_ok: Tensor) -> Tensor:
        """``priority`` of rows that may read each other (the open slots of one hypothesis, left to right)."""
        return self.priority(logp)

    def empty_first(self, logp: Tensor) -> Tensor:
        """[..] bool: the slot's likeliest token is the empty one (False without ``empty_id``)."""
        if self.empty_id is None:
            return torch.zeros(logp.shape[:-1], dtype=torch.bool, device=logp.device)
        return logp.argmax(-1) == self.empty_id

    def queries(self, open_: Tensor, n_filled: Tensor, plan: Tensor | None) -> tuple[Tensor, Tensor]:
        q_pos, ok = self.open_positions(open_)
        if self.window:
            q_pos, ok = q_pos[:, : self.window], ok[:, : self.window]
        if self.ahead:  # kept for ``score`` of this step's rows (greedy, sampling and beam query, then rank)
            self._ahead = slots_ahead(open_, q_pos)
        return q_pos, ok

    @staticmethod
    def open_positions(open_: Tensor) -> tuple[Tensor, Tensor]:
        """Every open slot, left to right -> (q_pos [B, Q] (0 where not ok), ok [B, Q]), Q = most open in a row."""
        Q = int(open_.sum(1).max())
        first = torch.sort((~open_).to(torch.int8), dim=1, stable=True).indices[:, :Q]  # open slots first, in order
        ok = open_.gather(1, first)
        return first * ok, ok

    def in_window(self, ok: Tensor) -> Tensor:
        """ok [.., Q] over positions in left-to-right order -> only the first ``window`` ok ones stay True."""
        return ok & (ok.long().cumsum(-1) <= self.window) if self.window else ok

    def rank_positions(self, logp: Tensor, q_ok: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """Queried rows sorted by priority (highest first), the first ``n`` kept -> (sel [B, n'], sel_ok)."""
        s = self.score(logp, q_ok).masked_fill(~q_ok, float("-inf"))
        n = min(n, q_ok.shape[1])
        sel = s.topk(n, dim=1).indices  # [B, n] sorted, best first
        return sel, q_ok.gather(1, sel)

    def choose(self, logp: Tensor, q_ok: Tensor) -> tuple[Tensor, Tensor]:
        sel, ok = self.rank_positions(logp, q_ok, q_ok.shape[1] if self.threshold is not None else self.k)
        if self.threshold is not None:
            conf = logp.max(-1).values.exp().gather(1, sel)  # [B, Q] max-probability, in priority order
            first = torch.zeros_like(ok)
            first[:, 0] = True
            ok = ok & (((conf > self.threshold) & ~self.empty_first(logp).gather(1, sel)) | first)
        return sel, ok


class Confidence(PriorityOrder):
    name = "confidence"

    def priority(self, logp):
        return logp.max(-1).values


class Anchored(Confidence):
    """Confidence discounted by how sure the model is of the *slot* of its word: priority = log p_i(w) +
    log[p_i(w) / (p_l(w) + p_i(w) + p_r(w))], w the likeliest token at slot i, l and r the nearest open slots on
    each side (absent at the ends, or outside the window). A word that the model expects at one of two neighbouring
    open slots waits until the context has decided which; under plain confidence it is written at one of them early,
    and in the demo model's repeats the copy written *first* is the one its leave-one-out prediction rejects
    (``experiments/results/recipe/README.md``, "anchored")."""

    name = "anchored"

    def priority_in_row(self, logp: Tensor, q_ok: Tensor) -> Tensor:
        best, w = logp.max(-1)  # [B, Q]
        none = torch.full_like(best[:, :1], float("-inf"))
        at_left = logp[:, :-1].gather(2, w[:, 1:, None])[..., 0].masked_fill(~q_ok[:, :-1], float("-inf"))
        at_right = logp[:, 1:].gather(2, w[:, :-1, None])[..., 0].masked_fill(~q_ok[:, 1:], float("-inf"))
        left, right = torch.cat([none, at_left], 1), torch.cat([at_right, none], 1)  # log p_l(w), log p_r(w)
        return 2 * best - torch.logsumexp(torch.stack([left, best, right]), 0)


class Entropy(PriorityOrder):
    name = "entropy"

    def priority(self, logp):
        p = logp.exp()
        return (p * logp.clamp(min=-1e30)).nan_to_num().sum(-1)  # −entropy: low entropy first


class Margin(PriorityOrder):
    name = "margin"

    def priority(self, logp):
        top = logp.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]


class Parallel(Confidence):
    """Confidence order filling k positions per step (set k with --k_per_step)."""

    name = "parallel"


class Threshold(Confidence):
    """Every open position whose max-probability exceeds p (at least one); p defaults to 0.9."""

    name = "threshold"

    def __init__(self, k: int = 1, threshold: float | None = None, seed: int = 0, window: int = 0,
                 empty_id: int | None = None, ahead: float = 0.0):
        super().__init__(k, 0.9 if threshold is None else threshold, seed, window, empty_id, ahead)


ORDERS: dict[str, type[Order]] = {c.name: c for c in (L2R, R2L, RandomOrder, MiddleOut, BalancedTree, Confidence,
                                                      Anchored, Entropy, Margin, Parallel, Threshold)}


def get_order(name: str, **kw) -> Order:
    """An order strategy by name; ``kw``: k (positions per step), threshold, seed, window, empty_id, ahead."""
    if name not in ORDERS:
        raise UserError(f"unknown --order {name!r}; choose one of {', '.join(ORDERS)}")
    return ORDERS[name](**kw)
