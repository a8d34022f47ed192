"""Every shipped experiment config loads and validates; config validation errors name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from plmgen.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from plmgen.errors import UserError

CONFIGS = sorted((Path(__file__).parent.parent / "experiments" / "configs").glob("*.yaml"))


def test_the_three_standard_configs_exist():
    assert {"tiny", "small-cpu", "base"} <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_round_trips(path, tmp_path):
    cfg = ExperimentConfig.from_yaml(path)
    assert cfg.name == path.stem
    cfg.to_yaml(tmp_path / "again.yaml")
    assert ExperimentConfig.from_yaml(tmp_path / "again.yaml") == cfg


def test_base_is_xlnet_base_scale():
    cfg = ExperimentConfig.from_yaml(next(p for p in CONFIGS if p.stem == "base"))
    m = cfg.model
    assert (m.d_model, m.n_layer, m.n_head, m.d_inner, m.mem_len) == (768, 12, 12, 3072, 384)
    assert (cfg.data.reuse_len, cfg.data.bi_data) == (256, True)
    assert cfg.data.seq_len == 512 and cfg.objective.perm_size == 256 and cfg.data.batch_size % 2 == 0


@pytest.mark.parametrize("make,field", [
    (lambda: TrainConfig(precision="16"), "precision"),
    (lambda: TrainConfig(max_steps=0), "max_steps"),
    (lambda: DataConfig(kind="stream"), "kind"),
    (lambda: ExperimentConfig(data=DataConfig(seq_len=10, reuse_len=8)), "seq_len"),
    (lambda: DataConfig(batch_size=3, bi_data=True), "bi_data"),
    (lambda: DataConfig(kind="parallel", bi_data=True), "bi_data"),
    (lambda: DataConfig(reuse_len=-3), "reuse_len"),
])
def test_bad_values_name_the_field(make, field):
    with pytest.raises(UserError, match=field):
        make()


def test_unknown_yaml_key_is_an_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  max_stepz: 3\n")
    with pytest.raises(ValueError, match="max_stepz"):
        ExperimentConfig.from_yaml(p)


@pytest.mark.parametrize("variant,objective", [("demo-ar", "prefix-lm"), ("demo-finetune-l2r", "seq2seq")])
def test_demo_baselines_share_the_demo_budget(variant, objective):
    """The AR baseline and the l2r-only fine-tuning differ from demo-finetune in the objective only."""
    from plmgen.objectives import build_objective

    base = ExperimentConfig.from_yaml(next(p for p in CONFIGS if p.stem == "demo-finetune"))
    cfg = ExperimentConfig.from_yaml(next(p for p in CONFIGS if p.stem == variant))
    assert (cfg.model, cfg.data, cfg.train) == (base.model, base.data, base.train)
    assert cfg.objective.name == objective
    if variant == "demo-finetune-l2r":
        assert cfg.objective.seq2seq.order == "l2r"
    build_objective(cfg.objective, cfg.model)  # its knobs are accepted by the objective itself


def test_configs_from_before_the_move_load_with_reuse_len_and_bi_data_under_data(tmp_path):
    """Checkpoints and YAML files written when reuse_len/bi_data were model fields still load, moved to data."""
    old = {"model": {"d_model": 32, "n_head": 4, "mem_len": 8, "reuse_len": 8, "bi_data": True},
           "data": {"kind": "pretrain", "seq_len": 32, "batch_size": 4}}
    cfg = ExperimentConfig.from_dict(old)
    assert (cfg.data.reuse_len, cfg.data.bi_data, cfg.model.mem_len) == (8, True, 8)
    assert "reuse_len" not in cfg.model.to_dict() and "bi_data" not in cfg.model.to_dict()
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    assert ExperimentConfig.from_yaml(tmp_path / "old.yaml") == cfg
    with pytest.raises(ValueError, match="give it once, as data.reuse_len"):
        ExperimentConfig.from_dict({"model": {"reuse_len": 8}, "data": {"reuse_len": 16}})
