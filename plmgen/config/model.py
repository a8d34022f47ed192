"""The XLNet backbone's architecture (``ModelConfig``) and the standard sizes (``ModelConfig.named``).

Architecture only: what the data feeds it (``data.reuse_len``, ``data.bi_data``) is a data setting that reaches the
backbone through each batch and ``XLNet.forward``'s arguments; older configs that hold them under ``model`` are
moved to ``data`` by ``ExperimentConfig.from_dict``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from .base import YamlConfig, check


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
    clamp_len: int = -1  # < 0: no clamping of relative distances
    same_length: bool = False
    attn_type: Literal["bi", "uni"] = "bi"
    untie_r: bool = True  # per-layer u/v/b biases (False: one set shared by all layers)
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        n = "ModelConfig"
        for f in ("vocab_size", "d_model", "n_layer", "n_head", "d_inner"):
            check(isinstance(getattr(self, f), int) and getattr(self, f) > 0, n, f"{f} must be a positive int, got {getattr(self, f)!r}")
        check(self.d_model % self.n_head == 0, n, f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        check(isinstance(self.mem_len, int) and self.mem_len >= 0, n, f"mem_len must be an int >= 0, got {self.mem_len!r}")
        check(isinstance(self.clamp_len, int), n, f"clamp_len must be an int, got {self.clamp_len!r}")
        for f in ("dropout", "dropatt"):
            check(0.0 <= getattr(self, f) < 1.0, n, f"{f} must be in [0, 1), got {getattr(self, f)!r}")
        check(self.attn_type in ("bi", "uni"), n, f"attn_type must be 'bi' or 'uni', got {self.attn_type!r}")
        check(self.ff_activation in ("gelu", "relu", "gelu_new", "silu"), n,
               f"ff_activation must be one of gelu, relu, gelu_new, silu; got {self.ff_activation!r}")
        check(not (self.same_length and self.attn_type != "uni"), n, "same_length only applies to attn_type 'uni'")
        check(self.layer_norm_eps > 0, n, f"layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        check(self.initializer_range > 0, n, f"initializer_range must be > 0, got {self.initializer_range!r}")

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
    "base": dict(vocab_size=32000, d_model=768, n_layer=12, n_head=12, d_inner=3072, mem_len=384),
    "large": dict(vocab_size=32000, d_model=1024, n_layer=24, n_head=16, d_inner=4096, mem_len=384),
}
