"""Registry, config validation, joint mixing and the NSP head."""

import pytest
import torch

from plmgen.config import ModelConfig, ObjectiveConfig, Seq2SeqConfig, parse_mixture, parse_order_mix
from plmgen.errors import UserError
from plmgen.objectives import OBJECTIVES, build_objective
from plmgen.objectives.nsp import cls_positions

from objectives.helpers import V, make_batch, tiny_model

MODEL_CFG = ModelConfig(vocab_size=V, d_model=32, n_layer=2, n_head=4, d_inner=64, dropout=0.0, dropatt=0.0)


def test_registry_names():
    assert {"plm", "dae", "mask-plm", "mass", "joint"} <= set(OBJECTIVES)
    for name, cls in OBJECTIVES.items():
        assert cls.name == name


def test_unknown_name_lists_choices():
    with pytest.raises(UserError, match="choose one of.*mask-plm"):
        ObjectiveConfig(name="bert")
    cfg = ObjectiveConfig()
    cfg.name = "nope"  # past validation: the registry itself must refuse it
    with pytest.raises(UserError, match=r"objective\.name.*'nope'.*dae, joint, mask-plm, mass, plm"):
        build_objective(cfg, MODEL_CFG)


@pytest.mark.parametrize("spec,bad", [("plm:1,foo:2", "foo:2"), ("plm:x", "plm:x"), ("plm:1,plm:2", "plm:2"),
                                      ("mass:-1", "mass:-1"), ("joint:1", "joint:1"), ("", "''")])
def test_bad_mixture(spec, bad):
    with pytest.raises(UserError, match=r"objective\.mixture") as e:
        ObjectiveConfig(name="joint", mixture=spec)
    assert bad.strip("'") in str(e.value) and "\n" not in str(e.value)


def test_mixture_parse():
    assert parse_mixture("plm:1, mass:0.5,dae") == [("plm", 1.0), ("mass", 0.5), ("dae", 1.0)]


@pytest.mark.parametrize("spec,bad", [("l2r:1,zigzag:2", "zigzag:2"), ("l2r:x", "l2r:x"), ("l2r,l2r:2", "l2r:2"),
                                      ("r2l:0", "r2l:0"), ("uniform:inf", "uniform:inf"), ("l2r:", "l2r:")])
def test_order_mix_shares_the_mixture_grammar(spec, bad):
    """One name:weight parser: the fine-tuning order mix refuses what the joint mixture refuses, naming its field."""
    with pytest.raises(UserError, match=r"objective\.seq2seq\.order") as e:
        Seq2SeqConfig(order=spec)
    assert bad in str(e.value) and "\n" not in str(e.value)
    assert parse_order_mix("l2r:1, uniform:3") == [("l2r", 0.25), ("uniform", 0.75)]


@pytest.mark.parametrize("field,value", [("K", 0.5), ("num_predict", 0), ("perm_size", -1), ("mask_beta", 0),
                                         ("dae_prob", 0.0), ("dae_mask_frac", 0.95), ("mass_ratio", 1.5),
                                         ("mass_order", "r2l"), ("nsp_weight", -1.0), ("max_gram", 0)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        ObjectiveConfig(**{field: value})


def test_config_yaml_round_trip(tmp_path):
    cfg = ObjectiveConfig(name="joint", mixture="plm:2,dae:1", K=7, span=False, nsp_weight=0.3)
    cfg.to_yaml(tmp_path / "o.yaml")
    assert ObjectiveConfig.from_yaml(tmp_path / "o.yaml") == cfg


def test_joint_is_weighted_sum_and_matches_parts():
    model = tiny_model(mem_len=8)
    batch = make_batch(2, 16, 0)
    cfg = ObjectiveConfig(name="joint", mixture="plm:2,mass:0.5", nsp_weight=0.25)
    joint = build_objective(cfg, model.cfg)
    out = joint(model, batch, None, torch.Generator().manual_seed(0))
    assert set(out.terms) == {"plm", "plm/nsp", "mass"}
    assert out.weights == {"plm": 2.0, "plm/nsp": 0.5, "mass": 0.5}
    total = sum(out.weights[k] * out.terms[k] for k in out.terms)
    torch.testing.assert_close(out.loss, total)
    # the first sub-objective draws first from the generator: it must equal plm on its own
    plm = build_objective(ObjectiveConfig(name="plm"), model.cfg)
    alone = plm(model, batch, None, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.terms["plm"], alone.terms["plm"])
    assert out.n_tokens["plm"] == alone.n_tokens["plm"]
    assert joint.uses_mems and joint.mem_owner == "plm" and out.mems is not None
    torch.testing.assert_close(out.mems[0], alone.mems[0])


def test_nsp_head():
    batch = make_batch(3, 16, 4)
    pos = cls_positions(batch)
    assert pos.tolist() == [int(batch["valid"][b].sum()) - 1 for b in range(3)]
    model = tiny_model()
    obj = build_objective(ObjectiveConfig(name="dae", nsp_weight=0.5), model.cfg)
    out = obj(model, batch, None, torch.Generator().manual_seed(0))
    assert out.weights["nsp"] == 0.5 and out.n_tokens["nsp"] == 3
    torch.testing.assert_close(out.loss, out.terms["dae"] + 0.5 * out.terms["nsp"])
    out.loss.backward()
    assert obj.nsp.out.weight.grad is not None and obj.nsp.out.weight.grad.abs().sum() > 0
    del batch["is_next"]
    with pytest.raises(UserError, match="nsp_weight"):
        obj(model, batch, None, torch.Generator().manual_seed(0))
    assert build_objective(ObjectiveConfig(name="plm"), model.cfg).nsp is None


@pytest.mark.parametrize("name", ["seq2seq", "prefix-lm"])
def test_nsp_head_is_refused_where_no_sentence_pair_exists(name):
    with pytest.raises(UserError, match="nsp_weight applies to pre-training"):
        ObjectiveConfig(name=name, nsp_weight=0.5)
    assert ObjectiveConfig(name=name).nsp_weight == 0  # the default builds
