"""bench train: FLOPs counted as executed (checked against a hand count and between objectives), and a smoke run
that prints MFU and the mask share for a pre-training and a fine-tuning experiment."""

from __future__ import annotations

import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from plmgen.benchmarks import train as bench
from plmgen.config import ModelConfig, ObjectiveConfig
from plmgen.model import XLNet
from plmgen.objectives import build_objective

from objectives.helpers import V, make_batch

MCFG = ModelConfig(vocab_size=V, d_model=32, n_layer=1, n_head=4, d_inner=64, dropout=0.0, dropatt=0.0, mem_len=0)


def _flops(name: str, batch: dict, mcfg: ModelConfig = MCFG, **kw) -> int:
    torch.manual_seed(0)
    objective = build_objective(ObjectiveConfig(name=name, **kw), mcfg)
    return bench.executed_flops(XLNet(mcfg), objective, batch, None, bf16=False, device="cpu")


def test_forward_count_matches_the_hand_count():
    """dae, one layer, no memory: every matmul of the forward, written out."""
    B, T, d, di, P = 2, 12, MCFG.d_model, MCFG.d_inner, 2  # P = dae_cap(12) = round(0.15 * 12)
    R = 2 * T - 1  # distances T−1 .. −(T−1)
    batch = make_batch(B, T, 0)
    objective = build_objective(ObjectiveConfig(name="dae"), MCFG)
    counter = FlopCounterMode(display=False)
    with counter:  # forward only (no backward is run)
        objective(XLNet(MCFG), batch)
    want = (2 * B * T * d * d * 4  # q, k, v, o
            + 2 * R * d * d  # W_kR on the positional table
            + 2 * B * T * d  # (q+b)·(s+ − s−)
            + 2 * B * T * T * d * 2  # q·k, p·v
            + 2 * B * T * R * d  # (q+v)·r against every table row
            + 2 * B * T * d * di * 2  # FFN
            + 2 * B * P * d * V)  # LM head on the predictions
    assert counter.get_total_flops() == want


def test_joint_counts_every_sub_objective():
    batch = make_batch(2, 16, 1)
    joint = _flops("joint", batch, mixture="plm:1,mass:1")
    assert joint == _flops("plm", batch) + _flops("mass", batch)


def test_plm_step_runs_less_than_three_forwards():
    """The loss reads only the query stream: the last block's content rows run forward but not backward."""
    mcfg = ModelConfig(vocab_size=V, d_model=32, n_layer=2, n_head=4, d_inner=64, dropout=0.0, mem_len=0)
    batch = make_batch(2, 16, 2)
    objective = build_objective(ObjectiveConfig(name="plm", K=3), mcfg)
    counter = FlopCounterMode(display=False)
    with counter:  # forward only (no backward is run)
        objective(XLNet(mcfg), batch)
    forward = counter.get_total_flops()
    step = _flops("plm", batch, mcfg, K=3)
    assert 2 * forward < step < 3 * forward


@pytest.mark.parametrize("experiment,objectives,first", [("tiny.yaml", "plm", "plm"),
                                                         ("finetune-tiny.yaml", None, "seq2seq")])
def test_bench_train_prints_mfu_and_mask_share(monkeypatch, capsys, experiment, objectives, first):
    monkeypatch.setitem(bench.MATMUL_SIZES, "cpu", (128,))
    res = bench.run(experiment=f"experiments/configs/{experiment}", objectives=objectives, steps=1, warmup=0,
                    batch=2)
    out = capsys.readouterr().out
    assert list(res)[0] == first
    mfu = float(re.search(r"^mfu bf16: (\S+)$", out, re.M).group(1))
    share = float(re.search(r"^mask share bf16: (\S+)$", out, re.M).group(1))
    assert 0 < mfu and 0 < share < 1
    assert "executed" in out and "before:" in out and "after:" in out


def test_mfu_judges_each_step_against_its_adjacent_matmul_windows(monkeypatch):
    """A window before the first timed step and one after every step; step k's reference is the better of the two
    around it, and the MFU is the median of flops / seconds / reference over the steps."""
    rates = iter([2e9, 8e9, 4e9, 1e9])  # windows: before step 0, after steps 0, 1, 2
    monkeypatch.setattr(bench, "matmul_rate", lambda *a, **kw: next(rates))
    cfg = bench.ExperimentConfig.from_yaml("experiments/configs/tiny.yaml")
    cfg = bench.dataclasses.replace(cfg, data=bench.dataclasses.replace(cfg.data, batch_size=2))
    res = bench.measure(cfg, "cpu", True, steps=3, warmup=1, window=64)
    assert res["windows"] == [2e9, 8e9, 4e9, 1e9]
    assert res["ref"] == [8e9, 8e9, 4e9]
    per_step = sorted(res["flops"] / t / r for t, r in zip(res["times"], res["ref"]))
    assert res["mfu_adjacent"] == pytest.approx(per_step[1])
