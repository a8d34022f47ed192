"""The training objective's knobs: ``ObjectiveConfig`` (plmgen/objectives/) with the nested ``Seq2SeqConfig``, and
the one parser of their ``name:weight`` mixtures."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..errors import UserError
from .base import YamlConfig, check

# --- seq2seq fine-tuning ---------------------------------------------------------------------------------------------

SEQ2SEQ_ORDERS = ("uniform", "l2r", "r2l", "local", "ends")


def parse_weighted(spec: str, choices: tuple[str, ...], field: str) -> list[tuple[str, float]]:
    """The one ``name:weight`` grammar: ``"a:1, b:0.5,c"`` -> [("a", 1.0), ("b", 0.5), ("c", 1.0)]. A bare name
    means weight 1; weights are finite numbers > 0; names come from ``choices``, each at most once. Raises a
    one-line UserError naming ``field`` and the bad part."""
    items: list[tuple[str, float]] = []
    for part in str(spec).split(","):
        name, colon, w = (x.strip() for x in part.partition(":"))
        bad = f"{field}: bad part {part.strip()!r} in {spec!r}"
        if name not in choices:
            raise UserError(f"{bad}: must be one of {', '.join(choices)}")
        try:
            weight = float(w) if colon else 1.0
        except ValueError:
            raise UserError(f"{bad}: weight {w!r} is not a number (expected NAME:WEIGHT)") from None
        if not 0 < weight < float("inf"):
            raise UserError(f"{bad}: weight must be a finite number > 0")
        if name in (n for n, _ in items):
            raise UserError(f"{bad}: {name!r} is listed twice")
        items.append((name, weight))
    return items


def parse_order_mix(spec: str) -> list[tuple[str, float]]:
    """``"uniform"`` or ``"l2r:0.5,uniform:0.5"`` -> [(order, probability)] (weights normalised to sum 1)."""
    items = parse_weighted(spec, SEQ2SEQ_ORDERS, "objective.seq2seq.order")
    total = sum(w for _, w in items)
    return [(n, w / total) for n, w in items]


@dataclasses.dataclass
class Seq2SeqConfig(YamlConfig):
    """Knobs of the seq2seq objective (layout ``[source <sep> target]``, see plmgen/objectives/seq2seq.py)."""

    # factorization orders of the target: uniform | l2r | r2l | local | ends | a mix "l2r:0.5,uniform:0.5"
    # (ends: from both ends towards a random split point, the two runs interleaved at random)
    order: str = "uniform"
    # local: left to right with jitter, slot j ranked by j + local_width·u (u uniform in [0, 1)): two slots can swap
    # only when less than local_width apart (1 = l2r) — the orders an adaptive decoder in a small window takes
    local_width: float = 3.0
    predict_fraction: float = 1.0  # share of target tokens predicted per example (the earliest-ranked rest = context)
    # fixed: every example predicts ceil(predict_fraction·L) tokens; uniform: each example draws how many, uniformly
    # from 1..ceil(predict_fraction·L) (Mask-Predict's masking, so refinement sees every amount of context)
    predict_sampling: str = "fixed"
    length_weight: float = 0.1  # weight of the joint target-length loss (0 = no length head training)
    max_len: int = 128  # length classes 1..max_len of the length head (and the longest target kept in training)
    mass_weight: float = 0.0  # > 0: add the `mass` span objective on each side of the pairs (MASS-style joint)
    label_smoothing: float = 0.0  # of the target-token cross-entropy (0 = plain cross-entropy)
    length_offset: bool = False  # length head scores target length − source length (plmgen.length.LengthHead)
    # a </s> after the last target slot, seen by the target only: the query stream knows where the target ends
    # (without it nothing tells a slot how many follow, and left-to-right decoding stops mid-sentence)
    end_marker: bool = False
    # > 0: weight of an unlikelihood term (Welleck et al. 2019) on the target tokens next to each prediction that its
    # query already sees and that differ from the label: -log(1 - p(neighbour)) (the loop "Click Click" is exactly a
    # high probability for a visible neighbour's token)
    unlikelihood: float = 0.0
    # the unlikelihood's neighbours: target slots up to this far on each side (1: p ∓ 1; 2 also catches a
    # two-piece word written twice, whose first piece sits two slots back); each distinct token counted once
    unlikelihood_window: int = 1
    # with unlikelihood: also the neighbours the query does not see yet (a word that belongs one slot over is unlikely
    # here whether or not it is decided: a word whose slot the context leaves open gets a flat distribution, so an
    # easy-first decoder waits for it instead of writing it one slot off)
    unlikelihood_unseen: bool = False
    # > 0: each training target gets 0..empty_slots extra slots (uniformly many, at uniformly random places) whose
    # label is the empty token (the tokenizer's <eop>); decoding may fill a slot with it and the text drops it, so a
    # target that needs fewer slots than the decoder gives it has a way out other than repeating a word
    empty_slots: int = 0
    # with unlikelihood and empty slots: the neighbours are the nearest non-empty slots on each side (the word across
    # an empty slot, which the dropped empty slot would make adjacent), not the slots at p ∓ 1
    unlikelihood_skip_empty: bool = False
    # where the empty slots go: random (anywhere in the target), end (after the last token: a way to stop early
    # that the model can locate, so its empty probability says "the sentence is over", not "unsure of this word"),
    # or mixed (each row one or the other with probability 1/2)
    empty_place: str = "random"
    # target slot j at position j, numbered like the source (source token i at i, <sep> at S): a target token and
    # the source token it was aligned with in a monotone translation are about 0 apart, so relative attention can
    # find "where in the source am I" from positions alone; off: the target follows <sep> (position S + 1 + j)
    aligned_positions: bool = False

    def __post_init__(self) -> None:
        n = "Seq2SeqConfig"
        parse_order_mix(self.order)
        check(self.local_width >= 1.0, n, f"local_width must be >= 1, got {self.local_width!r}")
        check(0.0 < self.predict_fraction <= 1.0, n, f"predict_fraction must be in (0, 1], got {self.predict_fraction!r}")
        check(self.predict_sampling in ("fixed", "uniform"), n,
                    f"predict_sampling must be fixed or uniform, got {self.predict_sampling!r}")
        check(self.length_weight >= 0, n, f"length_weight must be >= 0, got {self.length_weight!r}")
        check(isinstance(self.max_len, int) and self.max_len >= 1, n, f"max_len must be an int >= 1, got {self.max_len!r}")
        check(self.mass_weight >= 0, n, f"mass_weight must be >= 0, got {self.mass_weight!r}")
        check(0.0 <= self.label_smoothing < 1.0, n,
                    f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        check(self.unlikelihood >= 0, n, f"unlikelihood must be >= 0, got {self.unlikelihood!r}")
        check(isinstance(self.empty_slots, int) and not isinstance(self.empty_slots, bool) and self.empty_slots >= 0,
              n, f"empty_slots must be an int >= 0, got {self.empty_slots!r}")
        check(not self.unlikelihood_skip_empty or (self.unlikelihood > 0 and self.empty_slots > 0), n,
              "unlikelihood_skip_empty needs unlikelihood > 0 and empty_slots > 0")
        check(isinstance(self.unlikelihood_window, int) and 1 <= self.unlikelihood_window <= 8, n,
              f"unlikelihood_window must be an int in [1, 8], got {self.unlikelihood_window!r}")
        check(not self.unlikelihood_unseen or self.unlikelihood > 0, n, "unlikelihood_unseen needs unlikelihood > 0")
        check(self.unlikelihood_window == 1 or not self.unlikelihood_skip_empty, n,
              "unlikelihood_skip_empty goes with unlikelihood_window 1")
        check(self.empty_place in ("random", "end", "mixed"), n,
              f"empty_place must be random, end or mixed, got {self.empty_place!r}")
        check(self.empty_place == "random" or self.empty_slots > 0, n,
              f"empty_place {self.empty_place} needs empty_slots > 0")


def check_prefix_lm_knobs(s2s: Seq2SeqConfig) -> None:
    """prefix-lm reads only ``seq2seq.max_len``: its query-stream knobs must keep their defaults (a switch that
    switches nothing is an error, raised when the config is built, before a study or a training starts)."""
    default = Seq2SeqConfig()
    unused = [f for f in ("predict_fraction", "predict_sampling", "length_weight", "mass_weight", "end_marker",
                          "unlikelihood", "empty_slots", "unlikelihood_skip_empty", "empty_place",
                          "unlikelihood_window", "unlikelihood_unseen")
              if getattr(s2s, f) != getattr(default, f)]
    if s2s.order not in (default.order, "l2r"):
        unused.insert(0, "order")
    if unused:
        raise UserError(f"objective prefix-lm is left to right with no query stream and no length head: "
                        f"objective.seq2seq.{', objective.seq2seq.'.join(unused)} do not apply (leave the defaults)")


# --- pre-training objectives -----------------------------------------------------------------------------------------

OBJECTIVE_NAMES = ("plm", "dae", "mask-plm", "mass", "joint", "seq2seq", "prefix-lm")


def parse_mixture(spec: str) -> list[tuple[str, float]]:
    """``"plm:1,mass:0.5"`` -> [("plm", 1.0), ("mass", 0.5)]: the sub-objectives of ``joint`` and their loss
    weights (``parse_weighted``'s grammar; errors name ``objective.mixture``)."""
    return parse_weighted(spec, tuple(n for n in OBJECTIVE_NAMES if n != "joint"), "objective.mixture")


@dataclasses.dataclass
class ObjectiveConfig(YamlConfig):
    """Which pre-training objective and its knobs (plmgen/objectives/; names follow the XLNet reference)."""

    name: str = "plm"  # plm | dae | mask-plm | mass | joint | seq2seq | prefix-lm
    # plm / mask-plm: which tokens are predicted and in which order
    K: float = 6.0  # predict ~1/K of the (non-functional) tokens: the last 1/K of the factorization order
    num_predict: int | None = None  # fixed count of predicted tokens per sequence instead of 1/K
    perm_size: int = 0  # local permutation in blocks of this many positions (0 or >= seq_len = the whole part)
    span: bool = True  # span-based prediction (n-grams); False = independent single tokens
    max_gram: int = 5  # longest predicted n-gram, p(n) ∝ 1/n
    mask_alpha: int = 6  # ~mask_beta predicted tokens per mask_alpha context tokens
    mask_beta: int = 1
    # dae (BERT-style masked LM)
    dae_prob: float = 0.15  # share of tokens predicted
    dae_mask_frac: float = 0.8  # of those: replaced by <mask> ...
    dae_random_frac: float = 0.1  # ... by a random token (the rest keep their token)
    # mass
    mass_ratio: float = 0.5  # length of the one predicted span, as a share of the non-functional tokens
    mass_order: Literal["l2r", "random"] = "l2r"  # order the query stream predicts the span in
    # joint
    mixture: str = "plm:1,mass:1"  # sub-objectives and loss weights
    # next-sentence prediction head on <cls> (0 = off)
    nsp_weight: float = 0.0
    # seq2seq fine-tuning knobs (plmgen/objectives/seq2seq.py; prefix-lm reads max_len only)
    seq2seq: Seq2SeqConfig = dataclasses.field(default_factory=Seq2SeqConfig)

    def __post_init__(self) -> None:
        n = "ObjectiveConfig"
        check(self.name in OBJECTIVE_NAMES, n,
                    f"unknown objective name {self.name!r}; choose one of {', '.join(OBJECTIVE_NAMES)}")
        check(isinstance(self.K, (int, float)) and self.K >= 1, n, f"K must be a number >= 1, got {self.K!r}")
        check(self.num_predict is None or (isinstance(self.num_predict, int) and self.num_predict > 0), n,
                    f"num_predict must be a positive int or null, got {self.num_predict!r}")
        for f in ("perm_size",):
            check(isinstance(getattr(self, f), int) and getattr(self, f) >= 0, n, f"{f} must be an int >= 0, got {getattr(self, f)!r}")
        for f in ("max_gram", "mask_alpha", "mask_beta"):
            check(isinstance(getattr(self, f), int) and getattr(self, f) > 0, n, f"{f} must be a positive int, got {getattr(self, f)!r}")
        check(isinstance(self.span, bool), n, f"span must be true or false, got {self.span!r}")
        check(0.0 < self.dae_prob <= 1.0, n, f"dae_prob must be in (0, 1], got {self.dae_prob!r}")
        check(self.dae_mask_frac >= 0 and self.dae_random_frac >= 0 and self.dae_mask_frac + self.dae_random_frac <= 1.0,
                    n, f"dae_mask_frac and dae_random_frac must be >= 0 with a sum <= 1, got {self.dae_mask_frac!r}, {self.dae_random_frac!r}")
        check(0.0 < self.mass_ratio <= 1.0, n, f"mass_ratio must be in (0, 1], got {self.mass_ratio!r}")
        check(self.mass_order in ("l2r", "random"), n, f"mass_order must be 'l2r' or 'random', got {self.mass_order!r}")
        check(self.nsp_weight >= 0, n, f"nsp_weight must be >= 0, got {self.nsp_weight!r}")
        check(self.nsp_weight == 0 or self.name not in ("seq2seq", "prefix-lm"), n,
              f"nsp_weight applies to pre-training on sentence pairs; objective {self.name} has no <cls> pair to "
              "classify (its head would never be trained): leave nsp_weight 0")
        parse_mixture(self.mixture)
        if isinstance(self.seq2seq, dict):  # YAML / jsonargparse may hand the nested config over as a mapping
            self.seq2seq = Seq2SeqConfig.from_dict(self.seq2seq)
        if self.name == "prefix-lm":
            check_prefix_lm_knobs(self.seq2seq)
