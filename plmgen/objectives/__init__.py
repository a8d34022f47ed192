"""Pre-training objectives around the XLNet backbone, selectable by name (``ObjectiveConfig.name``).

``build_objective(cfg, model_cfg, special) -> Objective``; ``OBJECTIVES`` maps each name to its class. Each
objective module exposes ``OBJECTIVE`` (its class); a new objective is registered by adding its module to
``_MODULES``.
"""

from __future__ import annotations

from importlib import import_module

from plmgen.config import ModelConfig, ObjectiveConfig
from plmgen.errors import UserError

from .base import Objective, ObjectiveOutput, SpecialIds

_MODULES = ("plm", "dae", "mask_plm", "mass", "joint", "seq2seq", "prefix_lm")

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (import_module(f"{__name__}.{m}").OBJECTIVE for m in _MODULES)
}


def build_objective(cfg: ObjectiveConfig, model_cfg: ModelConfig, special: SpecialIds | None = None) -> Objective:
    """The objective named ``cfg.name``; ``special`` = the tokenizer's ids (``SpecialIds.from_tokenizer(tok)``)."""
    if cfg.name not in OBJECTIVES:
        raise UserError(f"objective.name: unknown objective {cfg.name!r}; choose one of {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[cfg.name](cfg, model_cfg, special)


__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput", "SpecialIds", "build_objective"]
