"""Decoding and translation runs: ``DecodeConfig`` (``plmgen.decoding.decode``) and ``TranslateConfig``
(``plmgen.decoding.translate``)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..errors import UserError
from .base import YamlConfig, check


@dataclasses.dataclass
class DecodeConfig(YamlConfig):
    """Any-order query-stream decoding (``plmgen.decoding.decode``).

    order: a name from ``plmgen.decoding.orders.ORDERS`` (l2r, r2l, random, middle-out, balanced-tree, confidence,
    anchored, entropy, margin, parallel, threshold). beam > 1: beam search over (position, token) pairs. sample:
    ancestral sampling with temperature / top_k (0 = off) / top_p (1 = off); temperature 0 = greedy. k_per_step:
    positions filled per step; threshold: fill every open position with max-probability above it (adaptive orders);
    window: W > 0 lets an adaptive order query and choose among the W leftmost open positions only (0 = all).
    ahead_penalty: λ > 0 ranks an adaptive order's slots by their score minus λ per open slot between the slot and
    the decided text on its left (easy-first with a prior for continuing the text; every slot stays a candidate).
    refine_iters: mask-predict refinement iterations after the fill. max_len: longest target allowed.
    max_segment: context tokens (source + <sep>) in the final segment; earlier ones go through memory.
    bf16: bfloat16 autocast. backend: "cache" (incremental, exact) or "recompute" (naive reference).
    speculate: k > 0 drafts k (position, token) pairs per pass and verifies them in the next pass
    (``decoding.speculative``): greedy output identical to speculate 0, sampling distributed identically.
    draft: "chain" (k drafts in a row) or "tree" (greedy only, ``decoding.tree``): speculate = D is the depth of a
    draft tree whose nodes each get tree_positions best-scored slots + tree_tokens tokens per neighbour slot
    (tree_expand r > 0: only each node's r likeliest drafts get children of their own).
    empty_last: with a checkpoint fine-tuned with empty slots, an adaptive order decides a slot whose likeliest
    token is the empty one only when no open slot's likeliest token is a word (``decoding.orders``; False: rank
    every slot by its plain score, as before 2026-12-04).
    """

    order: str = "l2r"
    beam: int = 1
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    k_per_step: int = 1
    threshold: float | None = None
    window: int = 0
    ahead_penalty: float = 0.0
    refine_iters: int = 0
    seed: int = 0  # decoding: sentence i's random order from (seed, i), its samples from (seed + 1, i)
    max_len: int = 256
    max_segment: int = 512
    bf16: bool = False
    backend: Literal["cache", "recompute"] = "cache"
    speculate: int = 0
    draft: Literal["chain", "tree"] = "chain"
    tree_positions: int = 2
    tree_tokens: int = 2
    tree_expand: int = 0
    empty_last: bool = True  # adaptive orders decide empty-token slots last (checkpoints with empty slots only)

    def __post_init__(self) -> None:
        from plmgen.decoding.orders import ORDERS, ahead_error, needs_adaptive, window_error

        n = "DecodeConfig"
        check(self.order in ORDERS, n, f"order {self.order!r} is unknown; choose one of {', '.join(ORDERS)}")
        for f in ("beam", "k_per_step", "max_len", "max_segment"):
            check(isinstance(getattr(self, f), int) and getattr(self, f) >= 1, n, f"{f} must be an int >= 1, got {getattr(self, f)!r}")
        for f in ("top_k", "refine_iters", "seed"):
            check(isinstance(getattr(self, f), int) and getattr(self, f) >= 0, n, f"{f} must be an int >= 0, got {getattr(self, f)!r}")
        check(self.temperature >= 0, n, f"temperature must be >= 0, got {self.temperature!r}")
        check(0.0 < self.top_p <= 1.0, n, f"top_p must be in (0, 1], got {self.top_p!r}")
        check(self.threshold is None or 0.0 < self.threshold < 1.0, n, f"threshold must be in (0, 1), got {self.threshold!r}")
        err = None if self.threshold is None else needs_adaptive("threshold", self.order)
        check(err is None, n, err or "")
        check((err := window_error(self.order, self.window)) is None, n, err or "")
        check((err := ahead_error(self.order, self.ahead_penalty)) is None, n, err or "")
        check(self.beam == 1 or not self.sample, n, "beam > 1 cannot be combined with sample")
        check(self.beam == 1 or (self.k_per_step == 1 and self.threshold is None and self.order != "threshold"), n,
                    "beam > 1 fills one position per step: use k_per_step 1 and no threshold")
        check(self.backend in ("cache", "recompute"), n, f"backend must be 'cache' or 'recompute', got {self.backend!r}")
        check(isinstance(self.speculate, int) and self.speculate >= 0, n, f"speculate must be an int >= 0, got {self.speculate!r}")
        check(not self.speculate or not self.ahead_penalty, n, "speculate does not take an ahead penalty (a draft's "
              "ranks would need the distances after each earlier draft); use speculate 0 with ahead_penalty")
        check(not self.speculate or self.beam == 1, n, "speculate drafts for greedy and sampling decoding; beam search stays sequential (use speculate 0 with beam > 1)")
        check(not self.speculate or (self.k_per_step == 1 and self.threshold is None and self.order != "threshold"), n,
                    "speculate verifies one-position-per-step decoding: use k_per_step 1 and no threshold")
        check(self.draft in ("chain", "tree"), n, f"draft must be 'chain' or 'tree', got {self.draft!r}")
        for f in ("tree_positions", "tree_tokens", "tree_expand"):
            v = getattr(self, f)
            check(isinstance(v, int) and v >= 0, n, f"{f} must be an int >= 0, got {v!r}")
        if self.draft == "tree" and self.speculate:
            check(not self.sample or self.temperature == 0, n,
                  "draft tree verifies greedy decoding; sampling uses draft chain")
            check(self.backend == "cache", n,
                  "draft tree runs on the cache backend (its exactness is tested against sequential decoding)")
            check(self.tree_positions + self.tree_tokens >= 1, n, "draft tree needs tree_positions + tree_tokens >= 1")
            check(self.speculate <= 4, n, f"draft tree depth (speculate) must be <= 4, got {self.speculate}")


def parse_speculate(spec: int | str) -> dict:
    """``--speculate`` -> DecodeConfig fields: K (a chain of K drafts; 0 = off), ``treeD`` (a draft tree D levels
    deep, default sizes), ``treeD:A+B`` (A best-scored slots + B tokens per neighbour slot under each node) or
    ``treeD:A+B/R`` (only each node's R likeliest drafts get children)."""
    text = str(spec).strip()
    if not text.startswith("tree"):
        try:
            return {"speculate": int(text), "draft": "chain"}
        except ValueError:
            raise UserError(f"--speculate {spec!r}: expected K (drafts per pass), treeD or treeD:A+B") from None
    depth, _, sizes = text[4:].partition(":")
    sizes, _, expand = sizes.partition("/")
    try:
        a, b = (int(x) for x in sizes.split("+")) if sizes else (2, 2)
        out = {"speculate": int(depth), "draft": "tree", "tree_positions": a, "tree_tokens": b,
               "tree_expand": int(expand) if expand else 0}
    except ValueError:
        raise UserError(f"--speculate {spec!r}: a tree is treeD, treeD:A+B or treeD:A+B/R, e.g. tree2:4+4/3") from None
    if out["speculate"] < 1:
        raise UserError(f"--speculate {spec!r}: a tree needs a depth D >= 1")
    return out


def parse_speculate_list(text, flag: str) -> list[str]:
    """A comma-separated list of ``--speculate`` values (``bench decode --drafts``, experiments) -> the values, each
    checked as a DecodeConfig now, so that a bad one fails before minutes of decoding, naming ``flag``."""
    specs = [x.strip() for x in str(text).split(",") if x.strip()]
    if not specs:
        raise UserError(f"{flag}: expected comma-separated --speculate values (K, treeD:A+B[/R]), got {text!r}")
    for x in specs:
        try:
            DecodeConfig(**parse_speculate(x))
        except UserError as e:
            raise UserError(f"{flag}: {e}") from None
    return specs


@dataclasses.dataclass
class TranslateConfig(YamlConfig):
    """A translation run (``plmgen.decoding.translate``): how to decode, how to choose each target length, how many
    sources per batch. length: ``predict`` (length head), ``oracle`` (reference length) or a fixed N; length_beam:
    with ``predict``, decode the top-K lengths and keep the best length-normalised log-probability."""

    decode: DecodeConfig = dataclasses.field(default_factory=DecodeConfig)
    length: str = "predict"
    length_beam: int = 1
    batch_size: int = 32

    def __post_init__(self) -> None:
        from plmgen.length import parse_length_mode

        n = "TranslateConfig"
        parse_length_mode(self.length)
        for f in ("length_beam", "batch_size"):
            check(isinstance(getattr(self, f), int) and getattr(self, f) >= 1, n, f"{f} must be an int >= 1, got {getattr(self, f)!r}")
