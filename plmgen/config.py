"""Typed configuration: the one source of truth for every knob in plmgen.

Each config is a dataclass validated in ``__post_init__`` (a bad value raises ``ValueError`` naming the field) and
round-trips through YAML. ``ModelConfig.named("tiny"|"small"|"base"|"large")`` gives the standard sizes.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

C = TypeVar("C", bound="YamlConfig")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder + rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class YamlConfig:
    """Mixin: dict/YAML round trip for a (possibly nested) config dataclass."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__}: expected a mapping, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(fields)}")
        kwargs = {}
        for name, value in d.items():
            sub = _nested_type(cls, name)
            kwargs[name] = sub.from_dict(value) if sub is not None and isinstance(value, dict) else value
        return cls(**kwargs)

    def to_yaml(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls: type[C], path: str | os.PathLike) -> C:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from None
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from None


def _nested_type(cls: type, name: str) -> type | None:
    """The YamlConfig subclass a field holds, if any (resolves string annotations)."""
    hints = _type_hints(cls)
    t = hints.get(name)
    return t if isinstance(t, type) and issubclass(t, YamlConfig) else None


def _type_hints(cls: type) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - only for exotic annotations
        return {}


def _check(cond: bool, cls: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{cls}: {msg}")


@dataclasses.dataclass
class ModelConfig(YamlConfig):
    """XLNet backbone hyper-parameters (names follow the reference implementation)."""

    vocab_size: int = 32000
    d_model: int = 1024
    n_layer: int = 24
    n_head: int = 16
    d_inner: int = 4096
    ff_activation: Literal["gelu", "relu", "gelu_new", "silu"] = "gelu"
    dropout: float = 0.1
    dropatt: float = 0.1
    mem_len: int = 0  # 0 = no Transformer-XL memory is cached
    reuse_len: int = 0  # 0 = cache the whole segment; else only its first reuse_len positions
    clamp_len: int = -1  # < 0: no clamping of relative distances
    bi_data: bool = False
    same_length: bool = False
    attn_type: Literal["bi", "uni"] = "bi"
    untie_r: bool = True  # per-layer u/v/b biases (False: one set shared by all layers)
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        n = "ModelConfig"
        for f in ("vocab_size", "d_model", "n_layer", "n_head", "d_inner"):
            _check(isinstance(getattr(self, f), int) and getattr(self, f) > 0, n, f"{f} must be a positive int, got {getattr(self, f)!r}")
        _check(self.d_model % self.n_head == 0, n, f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        for f in ("mem_len", "reuse_len"):
            _check(isinstance(getattr(self, f), int) and getattr(self, f) >= 0, n, f"{f} must be an int >= 0, got {getattr(self, f)!r}")
        _check(isinstance(self.clamp_len, int), n, f"clamp_len must be an int, got {self.clamp_len!r}")
        for f in ("dropout", "dropatt"):
            _check(0.0 <= getattr(self, f) < 1.0, n, f"{f} must be in [0, 1), got {getattr(self, f)!r}")
        _check(self.attn_type in ("bi", "uni"), n, f"attn_type must be 'bi' or 'uni', got {self.attn_type!r}")
        _check(self.ff_activation in ("gelu", "relu", "gelu_new", "silu"), n,
               f"ff_activation must be one of gelu, relu, gelu_new, silu; got {self.ff_activation!r}")
        _check(not (self.same_length and self.attn_type != "uni"), n, "same_length only applies to attn_type 'uni'")
        _check(self.layer_norm_eps > 0, n, f"layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        _check(self.initializer_range > 0, n, f"initializer_range must be > 0, got {self.initializer_range!r}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def named(cls, size: str, **overrides: Any) -> "ModelConfig":
        """A standard size (``tiny``, ``small``, ``base``, ``large``), with field overrides."""
        if size not in NAMED_SIZES:
            raise ValueError(f"unknown model size {size!r}; choose one of {sorted(NAMED_SIZES)}")
        return cls(**{**NAMED_SIZES[size], **overrides})


NAMED_SIZES: dict[str, dict[str, Any]] = {
    # Unit tests: a forward pass in milliseconds.
    "tiny": dict(vocab_size=1000, d_model=32, n_layer=2, n_head=4, d_inner=64, mem_len=16, dropout=0.0, dropatt=0.0),
    # CPU research runs (bf16 on 2 cores): ~10M non-embedding parameters.
    "small": dict(vocab_size=8000, d_model=256, n_layer=6, n_head=4, d_inner=1024, mem_len=128),
    # XLNet-Base and XLNet-Large, as in the paper.
    "base": dict(vocab_size=32000, d_model=768, n_layer=12, n_head=12, d_inner=3072, mem_len=384, reuse_len=256),
    "large": dict(vocab_size=32000, d_model=1024, n_layer=24, n_head=16, d_inner=4096, mem_len=384, reuse_len=256),
}


# --- seq2seq fine-tuning (owner: seq2seq/generation engineer) ---------------------------------------------------------

SEQ2SEQ_ORDERS = ("uniform", "l2r", "r2l")


def parse_order_mix(spec: str) -> list[tuple[str, float]]:
    """``"uniform"`` or ``"l2r:0.5,uniform:0.5"`` -> [(order, probability)] (weights normalised to sum 1)."""
    items: list[tuple[str, float]] = []
    for part in str(spec).split(","):
        name, _, w = part.strip().partition(":")
        _check(name in SEQ2SEQ_ORDERS, "Seq2SeqConfig", f"order {name!r} in {spec!r} is not one of {', '.join(SEQ2SEQ_ORDERS)}")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"Seq2SeqConfig: weight {w!r} of order {name!r} in {spec!r} is not a number") from None
        _check(weight > 0, "Seq2SeqConfig", f"weight of order {name!r} in {spec!r} must be > 0")
        items.append((name, weight))
    total = sum(w for _, w in items)
    return [(n, w / total) for n, w in items]


@dataclasses.dataclass
class Seq2SeqConfig(YamlConfig):
    """Knobs of the seq2seq objective (layout ``[source <sep> target]``, see plmgen/objectives/seq2seq.py)."""

    order: str = "uniform"  # factorization orders of the target: uniform | l2r | r2l | a mix "l2r:0.5,uniform:0.5"
    predict_fraction: float = 1.0  # share of target tokens predicted per example (the earliest-ranked rest = context)
    length_weight: float = 0.1  # weight of the joint target-length loss (0 = no length head training)
    max_len: int = 128  # length classes 1..max_len of the length head (and the longest target kept in training)
    mass_weight: float = 0.0  # > 0: add the `mass` span objective on each side of the pairs (MASS-style joint)

    def __post_init__(self) -> None:
        n = "Seq2SeqConfig"
        parse_order_mix(self.order)
        _check(0.0 < self.predict_fraction <= 1.0, n, f"predict_fraction must be in (0, 1], got {self.predict_fraction!r}")
        _check(self.length_weight >= 0, n, f"length_weight must be >= 0, got {self.length_weight!r}")
        _check(isinstance(self.max_len, int) and self.max_len >= 1, n, f"max_len must be an int >= 1, got {self.max_len!r}")
        _check(self.mass_weight >= 0, n, f"mass_weight must be >= 0, got {self.mass_weight!r}")
