"""Every objective's training step stays on the batch's device: no host read in plmgen/objectives or masks.py.

Two checks: a grep of the code (comments and docstrings stripped) for ``.cpu()``/``.tolist()``/``.item()``/
``.numpy()``, and a run of every objective's forward under a TorchFunctionMode that records each tensor operation
that makes the host wait for the device (reading a value, a data-dependent shape) when it is called from objective
or mask code. The backbone's own reads (plmgen/model.py, attention.py) are outside this check.

``PLMGEN_TEST_DEVICE=cuda`` (experiments/gpu_check.sh) runs the steps on the GPU, and each objective's ``sample``
under ``torch.cuda.set_sync_debug_mode("error")``: CUDA itself then refuses any synchronising call.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tokenize
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from plmgen.config import ModelConfig, ObjectiveConfig, Seq2SeqConfig
from plmgen.data.parallel import pair_batch
from plmgen.model import XLNet
from plmgen.objectives import build_objective

from objectives.helpers import V, make_batch

DEVICE = os.environ.get("PLMGEN_TEST_DEVICE", "cpu")
PKG = Path(__file__).resolve().parents[2] / "plmgen"
STEP_CODE = sorted((PKG / "objectives").glob("*.py")) + [PKG / "masks.py"]
HOST_READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero",
              "masked_select", "unique", "argwhere"}


def code_only(path: Path) -> str:
    """The file's code without comments and strings (docstrings may name the calls they forbid)."""
    toks = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return " ".join(t.string for t in toks if t.type not in (tokenize.COMMENT, tokenize.STRING))


@pytest.mark.parametrize("path", STEP_CODE, ids=lambda p: p.name)
def test_no_host_read_calls_in_objective_code(path):
    found = re.findall(r"\.\s*(cpu|tolist|item|numpy)\s*\(\s*\)", code_only(path))
    assert not found, f"{path.name} calls {found}: sample on the batch's device instead"


class HostReads(TorchFunctionMode):
    """Records host reads made directly by objective/mask code (the first frame outside torch)."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        bool_index = name in ("__getitem__", "__setitem__") and _has_bool_tensor(args[1:2])
        if name in HOST_READS or bool_index:
            frame = sys._getframe(1)
            while frame is not None and "/torch/" in frame.f_code.co_filename:
                frame = frame.f_back
            if frame is not None and Path(frame.f_code.co_filename).resolve() in STEP_CODE:
                self.found.append(f"{name} at {Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
        return func(*args, **(kwargs or {}))


def _has_bool_tensor(items) -> bool:
    for x in items:
        if isinstance(x, tuple):
            if _has_bool_tensor(x):
                return True
        elif torch.is_tensor(x) and x.dtype == torch.bool:
            return True
    return False


def _pretrain(name: str, **kw):
    cfg = ObjectiveConfig(name=name, K=3, perm_size=4, **kw)
    mcfg = ModelConfig(vocab_size=V, d_model=32, n_layer=2, n_head=4, d_inner=64, mem_len=8)
    batch = make_batch(4, 20, 0, reuse_len=6)
    batch["cls_pos"] = (batch["seg_ids"] == 2).long().argmax(1)  # what the pre-training pipeline provides
    return cfg, mcfg, batch


CASES = {
    "plm": lambda: _pretrain("plm"),
    "plm-nsp": lambda: _pretrain("plm", nsp_weight=1.0),
    "plm-no-span": lambda: _pretrain("plm", span=False),
    "dae": lambda: _pretrain("dae"),
    "mask-plm": lambda: _pretrain("mask-plm"),
    "mass": lambda: _pretrain("mass", mass_order="random"),
    "joint": lambda: _pretrain("joint", mixture="plm:1,mass:1"),
    "seq2seq": lambda: (ObjectiveConfig(name="seq2seq", seq2seq=Seq2SeqConfig(
        order="l2r:0.5,uniform:0.3,r2l:0.2", predict_fraction=0.7, predict_sampling="uniform", mass_weight=0.5,
        max_len=16)), ModelConfig(vocab_size=V, d_model=32, n_layer=2, n_head=4, d_inner=64, mem_len=0),
        pair_batch([[11, 12, 13], [14], [15, 16]], [[21, 22], [23, 24, 25, 26], [27]], 4, 5)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_step_reads_nothing_back_from_the_device(case):
    cfg, mcfg, batch = CASES[case]()
    batch = {k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in batch.items()}
    torch.manual_seed(0)
    model, objective = XLNet(mcfg).to(DEVICE), build_objective(cfg, mcfg).to(DEVICE)
    mems = [torch.zeros(4, 8, 32, device=DEVICE)] * 2 if objective.uses_mems and mcfg.mem_len else None
    with HostReads() as reads:
        out = objective(model, batch, mems=mems)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert not reads.found, f"{case}: host reads in the step: {reads.found}"
    if DEVICE == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            objective.sample(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_the_check_is_live():
    """The mode does see a host read made from objective code."""
    from plmgen.masks import target_positions

    with HostReads() as reads:
        target_positions(torch.tensor([[0, -1, 1]]))  # no num_predict: P is read from the device
    assert reads.found and "masks.py" in reads.found[0]
