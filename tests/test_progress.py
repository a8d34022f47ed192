"""Progress in a log file: plain lines (step/total, loss, rate, ETA) when stdout is not a terminal; training
counts steps out of max_steps, also after a resume."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from train_helpers import StandInObjective, make_dataset, make_tokenizer

from plmgen.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from plmgen.progress import PlainProgress, progress_line
from plmgen.train import run_training
from plmgen.train_progress import LineProgress, StepBar, progress_callback


def test_progress_line():
    assert progress_line("step", 120, 6000, 3.0, "steps", "loss 4.2100") == \
        "step 120/6000 (2%) loss 4.2100 | 3.00 steps/s, ETA 32:40"
    assert progress_line("l2r", 5, None, 0.0) == "l2r 5 | 0.00 it/s"


def test_plain_progress_prints_lines_not_bars():
    out = io.StringIO()
    with PlainProgress(file=out, every=0) as bar:
        task = bar.add_task("l2r (predict)", total=4)
        bar.advance(task, 2)
        bar.advance(task, 2)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("l2r (predict) 2/4 (50%)") and lines[-1].startswith("l2r (predict) 4/4 (100%)")
    quiet = io.StringIO()
    bar = PlainProgress(file=quiet, disable=True, every=0)
    bar.advance(bar.add_task("x", total=1))
    assert quiet.getvalue() == ""


def test_callback_follows_the_output():
    assert isinstance(progress_callback(True), LineProgress)  # pytest's stdout is not a terminal
    assert progress_callback(False) is None
    bar = StepBar()
    bar._trainer = SimpleNamespace(max_steps=6000)
    assert bar.total_train_batches == 6000 and "Epoch" not in bar._get_train_description(0)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    data = make_dataset(root, n_train=60, n_dev=12)
    return data, make_tokenizer(root, data).path


def test_training_prints_step_lines_also_after_resume(assets, tmp_path, capsys):
    data, tok = assets

    def cfg(steps):
        t = TrainConfig(max_steps=steps, warmup_steps=1, val_every=2, log_every=1, accelerator="cpu", devices=1)
        return ExperimentConfig(name="p", out_dir=str(tmp_path / "run"), tokenizer=tok,
                                model=ModelConfig.named("tiny", vocab_size=120, mem_len=0),
                                data=DataConfig(path=str(data), seq_len=24, batch_size=4, val_batches=1), train=t)

    run_training(cfg(4), objective=StandInObjective())
    out = capsys.readouterr().out
    assert "step 1/4 (25%) loss " in out and "step 4/4 (100%)" in out and "steps/s" in out
    assert "validation at step 2: val/loss" in out
    run_training(cfg(6), objective=StandInObjective(), resume="last")
    out = capsys.readouterr().out
    assert "resumed at step 4" in out and "step 5/6" in out and "step 6/6 (100%)" in out
