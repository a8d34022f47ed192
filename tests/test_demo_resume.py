"""An interrupted demo never reports a partial model as finished: a rerun resumes the unfinished stage exactly
(and says so), reuses only stages that completed, and ``--force`` retrains. Tiny variants of the demo configs."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import make_dataset

import plmgen.data.prepare  # noqa: F401 - the module, patched below (plmgen.data re-exports the function)
import plmgen.demo as demo_mod
from plmgen.errors import Stopped
from plmgen.lit import StopOnSignal
from plmgen.stages import completed

TINY_MODEL = dict(vocab_size=200, d_model=32, n_layer=2, n_head=4, d_inner=64, dropout=0.0, dropatt=0.0)
STEPS = 6


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    """Tiny copies of every demo-*.yaml (same stages, tiny model, few steps) and a small prepared folder."""
    root = tmp_path_factory.mktemp("demo")
    configs = root / "configs"
    configs.mkdir()
    for path in demo_mod.CONFIGS.glob("demo-*.yaml"):
        cfg = yaml.safe_load(path.read_text())
        cfg["model"].update(TINY_MODEL, **({"mem_len": 8} if cfg["model"].get("mem_len") else {}))
        reuse = {"reuse_len": 8} if cfg["data"].get("reuse_len") else {}
        cfg["data"].update(seq_len=32, batch_size=4, val_batches=1, **reuse)
        cfg["train"].update(max_steps=STEPS, warmup_steps=1, val_every=3, log_every=1, precision="fp32",
                            progress_bar=False, devices=1, strategy="auto")  # in process (DDP: the test below)
        if "perm_size" in cfg.get("objective", {}):
            cfg["objective"]["perm_size"] = 8
        (configs / path.name).write_text(yaml.safe_dump(cfg))
    return configs, make_dataset(root, n_train=120, n_dev=12)


def run_demo(tiny_env, out: Path, monkeypatch, capsys, **kw) -> str:
    configs, data = tiny_env
    monkeypatch.setattr(demo_mod, "CONFIGS", configs)
    monkeypatch.setattr(sys.modules["plmgen.data.prepare"], "prepare", lambda *a, **k: data)
    demo_mod.demo(out=str(out), data=str(data), orders="l2r", limit=4, **kw)
    return capsys.readouterr().out


def interrupt_at(monkeypatch, run_name: str, step: int) -> None:
    """A SIGINT arriving during `run_name`'s training at `step`: the real graceful path (StopOnSignal) handles it."""
    original = StopOnSignal.on_train_batch_end

    def fake_signal(self, trainer, module, outputs, batch, batch_idx):
        if Path(trainer.default_root_dir).name == run_name and trainer.global_step >= step:
            self.signum = signal.SIGINT
        original(self, trainer, module, outputs, batch, batch_idx)

    monkeypatch.setattr(StopOnSignal, "on_train_batch_end", fake_signal)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_interrupted_demo_resumes_and_never_reports_partial_model(tiny_env, tmp_path, monkeypatch, capsys, stage):
    out = tmp_path / "demo"
    with monkeypatch.context() as m:
        interrupt_at(m, stage, 2)
        with pytest.raises(Stopped) as stopped:
            run_demo(tiny_env, out, m, capsys)
    assert stopped.value.signum == signal.SIGINT
    first = capsys.readouterr().out
    assert not (out / "orders" / "orders.md").exists() and "BLEU" not in first
    ckpt = torch.load(out / stage / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 and completed(out / stage) is None  # graceful checkpoint, not marked complete

    again = run_demo(tiny_env, out, monkeypatch, capsys)
    assert f"stopped at step 2 of {STEPS}): resuming" in again.replace("\n", " ")
    assert f"reusing {out / stage}" not in again.replace("\n", "")
    for run in ("pretrain", "finetune"):
        assert completed(out / run)["step"] == STEPS
        assert torch.load(out / run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == STEPS
    assert (out / "orders" / "orders.md").is_file()

    third = run_demo(tiny_env, out, monkeypatch, capsys).replace("\n", "")
    assert "reusing" in third and "resuming" not in third and "finished at step" in third
    forced = run_demo(tiny_env, out, monkeypatch, capsys, force=True).replace("\n", "")
    assert "--force: deleting" in forced and "reusing" not in forced


def test_multi_process_stage_trains_in_a_child(tiny_env, tmp_path, monkeypatch, capfd):
    """A stage whose config asks for two processes (the demo's fine-tuning: DDP, one process per CPU core) runs
    `cli.py train` in a child, whose DDP launcher starts the second rank (it re-runs its own command line, which
    must not be the whole demo); the run completes with both ranks, and a rerun of the demo reuses it."""
    configs, data = tiny_env
    ddp = tmp_path / "configs"
    ddp.mkdir()
    for path in configs.glob("demo-*.yaml"):
        cfg = yaml.safe_load(path.read_text())
        if path.name == "demo-finetune.yaml":
            cfg["train"].update(devices=2, strategy="ddp")
        (ddp / path.name).write_text(yaml.safe_dump(cfg))
    monkeypatch.setattr(demo_mod, "CONFIGS", ddp)
    monkeypatch.setattr(sys.modules["plmgen.data.prepare"], "prepare", lambda *a, **k: data)
    out = tmp_path / "demo"
    demo_mod.demo(out=str(out), data=str(data), orders="l2r", limit=4)
    first = capfd.readouterr()
    assert "MEMBER: 2/2" in first.out + first.err  # the second rank joined
    assert completed(out / "finetune")["step"] == STEPS and (out / "orders" / "orders.md").is_file()
    assert torch.load(out / "finetune" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == STEPS
    demo_mod.demo(out=str(out), data=str(data), orders="l2r", limit=4)
    assert f"reusing {out / 'finetune'}" in capfd.readouterr().out.replace("\n", "")
