"""The study scripts in experiments/: configs and overrides stay valid as the typed configs evolve (the study
specs themselves: tests/test_study.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plmgen.config import ExperimentConfig
from plmgen.study.spec import override

ROOT = Path(__file__).resolve().parents[1]


def test_override_changes_only_the_named_keys():
    base = ExperimentConfig.from_yaml(ROOT / "experiments" / "configs" / "demo-pretrain.yaml")
    cfg = override(base, {"model.mem_len": 0, "objective.seq2seq.order": "l2r"})
    assert cfg.model.mem_len == 0 and cfg.objective.seq2seq.order == "l2r"
    assert cfg.data.reuse_len == base.data.reuse_len == 32  # "memory off" keeps the data layout
    assert cfg.model.d_model == base.model.d_model


def test_override_rejects_unknown_keys_and_bad_values():
    base = ExperimentConfig.from_yaml(ROOT / "experiments" / "configs" / "demo-pretrain.yaml")
    with pytest.raises(KeyError, match="model.memlen"):
        override(base, {"model.memlen": 0})
    with pytest.raises(ValueError, match="objective"):
        override(base, {"objective.name": "no-such-objective"})
