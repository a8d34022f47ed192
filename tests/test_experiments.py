"""The study scripts in experiments/: their configs stay valid as the typed configs evolve."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from plmgen.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("variant", list(load("run_ablations").VARIANTS))
def test_every_ablation_variant_is_a_valid_pretraining_config(variant):
    ab = load("run_ablations")
    base = ExperimentConfig.from_yaml(ROOT / "experiments" / "configs" / "demo-pretrain.yaml")
    dotted = ab.VARIANTS[variant]
    if dotted is None:
        return  # scratch: no pre-training run
    cfg = ab.override(base, dotted)
    for key, value in dotted.items():
        node, *path, leaf = key.split(".")
        target = getattr(cfg, node)
        for part in path:
            target = getattr(target, part)
        assert getattr(target, leaf) == value
    assert cfg.model.d_model == base.model.d_model  # only the variant's keys change


def test_override_rejects_unknown_keys_and_bad_values():
    ab = load("run_ablations")
    base = ExperimentConfig.from_yaml(ROOT / "experiments" / "configs" / "demo-pretrain.yaml")
    with pytest.raises(KeyError, match="model.memlen"):
        ab.override(base, {"model.memlen": 0})
    with pytest.raises(ValueError, match="objective"):
        ab.override(base, {"objective.name": "no-such-objective"})
