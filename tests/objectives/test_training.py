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


@pytest.mark.parametrize("case", ["plm", "plm-nsp", "dae", "mask-plm", "mass", "joint", "seq2seq", "prefix-lm"])
def test_every_trained_parameter_gets_a_gradient(case):
    """What DDP requires (it refuses a parameter that takes no part in the loss): the parameters one step's backward
    leaves without a gradient are exactly mask_emb for the objectives that declare no query stream (and none
    otherwise), and PLMModule trains exactly the others."""
    from objectives.test_device import CASES

    from plmgen.config import ModelConfig, TrainConfig
    from plmgen.data.parallel import pair_batch
    from plmgen.lit import PLMModule
    from plmgen.model import XLNet

    if case == "prefix-lm":
        cfg, mcfg = ObjectiveConfig(name="prefix-lm"), ModelConfig(vocab_size=64, d_model=32, n_layer=2, n_head=4,
                                                                   d_inner=64, mem_len=0)
        batch = pair_batch([[11, 12, 13], [14], [15, 16]], [[21, 22], [23, 24, 25, 26], [27]], 4, 5)
    else:
        cfg, mcfg, batch = CASES[case]()
    torch.manual_seed(0)
    model, objective = XLNet(mcfg), build_objective(cfg, mcfg)
    mems = [torch.zeros(4, 8, 32)] * 2 if objective.uses_mems and mcfg.mem_len else None
    objective(model, batch, mems=mems).loss.backward()
    params = dict(model.named_parameters(prefix="model")) | dict(objective.named_parameters(prefix="objective"))
    unused = {n for n, p in params.items() if p.grad is None}
    assert unused == (set() if objective.query_stream else {"model.mask_emb"})
    module = PLMModule(model, objective, TrainConfig())
    assert {n for n, p in module.named_parameters() if p.requires_grad} == set(params) - unused
