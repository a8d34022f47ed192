import pytest

from plmgen.config import ModelConfig
from plmgen.errors import UserError


def test_named_sizes():
    base = ModelConfig.named("base")
    assert (base.n_layer, base.d_model, base.n_head, base.d_inner) == (12, 768, 12, 3072)
    large = ModelConfig.named("large")
    assert (large.n_layer, large.d_model, large.n_head, large.d_inner) == (24, 1024, 16, 4096)
    assert ModelConfig.named("tiny", mem_len=0).mem_len == 0
    with pytest.raises(ValueError, match="unknown model size"):
        ModelConfig.named("huge")


@pytest.mark.parametrize("kw, msg", [
    (dict(d_model=30, n_head=4), "divisible"),
    (dict(mem_len=-1), "mem_len"),
    (dict(attn_type="causal"), "attn_type"),
    (dict(dropout=1.5), "dropout"),
    (dict(n_layer=0), "n_layer"),
    (dict(same_length=True), "same_length"),
    (dict(ff_activation="swish"), "ff_activation"),
])
def test_validation_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ModelConfig.named("tiny", **kw)


def test_yaml_round_trip(tmp_path):
    cfg = ModelConfig.named("small", attn_type="uni", same_length=True, clamp_len=64)
    cfg.to_yaml(tmp_path / "m.yaml")
    assert ModelConfig.from_yaml(tmp_path / "m.yaml") == cfg


def test_yaml_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("d_model: 32\nn_head: 5\n")
    with pytest.raises(ValueError, match="bad.yaml.*divisible"):
        ModelConfig.from_yaml(p)
    p.write_text("d_modle: 32\n")
    with pytest.raises(ValueError, match="unknown field.*d_modle"):
        ModelConfig.from_yaml(p)


def test_one_spelling_of_precision():
    """fp32 / bf16 everywhere; the older Lightning spellings still load (configs inside earlier checkpoints)."""
    from plmgen.config import TrainConfig, parse_precision

    assert [TrainConfig(precision=p).precision for p in ("fp32", 32, "32", "bf16", "bf16-mixed")] == \
        ["fp32"] * 3 + ["bf16"] * 2
    assert TrainConfig.from_dict(TrainConfig(precision="bf16-mixed").to_dict()).precision == "bf16"
    with pytest.raises(UserError, match="--precision: precision must be one of fp32, bf16; got '16'"):
        parse_precision("16", "--precision")


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_empty_slots_must_be_a_count(bad):
    from plmgen.config import Seq2SeqConfig

    with pytest.raises(ValueError, match="empty_slots must be an int >= 0"):
        Seq2SeqConfig(empty_slots=bad)
    assert Seq2SeqConfig(empty_slots=3).empty_slots == 3
