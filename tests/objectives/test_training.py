"""Every objective: finite losses with padding, B=1, bf16 autocast, memory on/off; loss goes down when trained."""

import pytest
import torch

from plmgen.config import ObjectiveConfig
from plmgen.objectives import build_objective

from objectives.helpers import make_batch, tiny_model

NAMES = ["plm", "dae", "mask-plm", "mass", "joint"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mem_len", [0, 8])
def test_runs_with_padding_b1_bf16_and_memory(name, mem_len):
    model = tiny_model(mem_len=mem_len)
    obj = build_objective(ObjectiveConfig(name=name, K=4, span=name != "dae", mixture="plm:1,mass:1,dae:0.5"), model.cfg)
    g = torch.Generator().manual_seed(0)
    for B, reuse in ((3, 0), (1, 0), (2, 6)):
        batch = make_batch(B, 16, B, reuse_len=reuse)
        out = obj(model, batch, None, g)
        assert torch.isfinite(out.loss) and out.loss > 0
        assert (out.mems is None) == (mem_len == 0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out2 = obj(model, batch, out.mems, g)
        assert torch.isfinite(out2.loss)
        out2.loss.backward()
        if mem_len:
            assert out2.mems[0].shape[1] == mem_len
            assert not out2.mems[0].requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_loss_goes_down(name):
    model = tiny_model(seed=1)
    obj = build_objective(ObjectiveConfig(name=name, K=3), model.cfg)
    batch = make_batch(2, 16, 11)
    opt = torch.optim.Adam(list(model.parameters()) + list(obj.parameters()), lr=3e-3)
    losses = []
    for _ in range(25):
        out = obj(model, batch, None, torch.Generator().manual_seed(0))  # same masks each step
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
