"""The batch's stream settings reach the backbone: ``reuse_len`` sizes the new memory and ``bi_backward`` switches
the second half of the rows to the backward positional table, for every objective that carries memory."""

from __future__ import annotations

import pytest
import torch

from plmgen.config import ModelConfig, ObjectiveConfig
from plmgen.objectives import build_objective

from objectives.helpers import V, make_batch, tiny_model


@pytest.mark.parametrize("name", ["plm", "dae", "mask-plm", "mass"])
def test_reuse_len_and_bi_data_come_from_the_batch(name):
    cfg = ObjectiveConfig(name=name, K=3, perm_size=4)
    model = tiny_model(3, mem_len=8)
    objective = build_objective(cfg, model.cfg)
    batch = make_batch(4, 20, 1, reuse_len=6)
    out = objective(model, batch, generator=torch.Generator().manual_seed(0))
    assert [m.shape[1] for m in out.mems] == [6, 6]  # the reuse part only, not the whole segment
    whole = objective(model, {k: v for k, v in batch.items() if k != "reuse_len"},
                      generator=torch.Generator().manual_seed(0))
    assert [m.shape[1] for m in whole.mems] == [8, 8]  # the segment's last mem_len states
    backward = objective(model, {**batch, "bi_backward": True}, generator=torch.Generator().manual_seed(0))
    # Layer 2's input states: the first half of the rows reads the forward table either way, the second half
    # (the backward streams) reads it reversed.
    assert torch.equal(backward.mems[-1][:2], out.mems[-1][:2])
    assert not torch.allclose(backward.mems[-1][2:], out.mems[-1][2:])


def test_model_config_has_no_data_settings():
    fields = set(ModelConfig.__dataclass_fields__)
    assert not fields & {"reuse_len", "bi_data"}, "data settings belong to DataConfig"
    assert V > 9
