"""``python cli.py train``: config file + flag overrides, run folder, load_checkpoint, --init_from, DDP, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from train_helpers import make_dataset

from plmgen.config import ExperimentConfig
from plmgen.train import load_checkpoint, run_training

ROOT = Path(__file__).parent.parent
TINY = ROOT / "experiments" / "configs" / "tiny.yaml"


def cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", "--config", str(TINY), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    res = cli("--data.path", str(data), "--out_dir", str(out), "--train.max_steps", "4", "--train.val_every", "2",
              "--model.mem_len", "8", "--train.progress_bar", "false")
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_run_folder_holds_config_tokenizer_checkpoints_logs(run):
    cfg = ExperimentConfig.from_yaml(run / "config.yaml")
    assert cfg.model.mem_len == 8 and cfg.train.max_steps == 4  # flags override the file
    assert cfg.model.d_model == 32  # ... which supplies the rest
    assert (run / "tokenizer.model").is_file() and cfg.tokenizer == str(run / "tokenizer.model")
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert list((run / "logs" / "csv").rglob("metrics.csv")) and list((run / "logs" / "tb").rglob("events.*"))
    metrics = next((run / "logs" / "csv").rglob("metrics.csv")).read_text()
    assert "val/loss" in metrics and "val/ppl_plm" in metrics


def test_load_checkpoint_rebuilds_model_objective_and_config(run):
    loaded = load_checkpoint(run / "checkpoints" / "last.ckpt")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 and loaded.config.objective.name == "plm"
    torch.testing.assert_close(loaded.model.word_embedding.weight, ckpt["state_dict"]["model.word_embedding.weight"])
    assert Path(loaded.tokenizer_path) == run / "tokenizer.model"


class FirstWeights(L.Callback):
    def on_train_start(self, trainer, module):
        self.model = {k: v.clone() for k, v in module.model.state_dict().items()}


def test_init_from_starts_from_the_pretrained_backbone(run, data, tmp_path):
    cfg = ExperimentConfig.from_yaml(run / "config.yaml")
    cfg.out_dir, cfg.tokenizer = str(tmp_path / "ft"), None
    cfg.objective.name = "dae"  # another objective: backbone only
    cfg.model.vocab_size, cfg.model.d_model = 999, 64  # shapes come from the checkpoint
    cfg.model.n_head = 4
    cfg.train.max_steps, cfg.train.progress_bar = 1, False
    rec = FirstWeights()
    run_training(cfg, init_from=str(run / "checkpoints" / "last.ckpt"), callbacks=[rec])
    pre = load_checkpoint(run / "checkpoints" / "last.ckpt").model.state_dict()
    for k, v in pre.items():
        torch.testing.assert_close(rec.model[k], v, msg=k)
    assert (tmp_path / "ft" / "tokenizer.model").read_bytes() == (run / "tokenizer.model").read_bytes()


@pytest.mark.parametrize("args,needle", [
    (["--train.max_stepz", "3"], "max_stepz"),
    (["--train.precision", "16"], "precision"),
    (["--objective.name", "bogus"], "objective"),
    (["--resume", "last", "--out_dir", "/nonexistent/run"], "--resume"),
])
def test_bad_flag_is_one_error_line(args, needle, data):
    res = cli("--data.path", str(data), *args, timeout=60)
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [i for i, line in enumerate(res.stderr.splitlines()) if line.startswith("error:")]
    assert len(errors) == 1 and needle in "\n".join(res.stderr.splitlines()[errors[0]:])
    assert "Traceback" not in res.stderr


def test_two_process_cpu_ddp(data, tmp_path):
    out = tmp_path / "ddp"
    res = cli("--data.path", str(data), "--out_dir", str(out), "--train.max_steps", "3", "--train.val_every", "3",
              "--train.strategy", "ddp", "--train.devices", "2", "--train.accelerator", "cpu",
              "--train.progress_bar", "false", timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3 and ckpt["PLMDataModule"] == {"next_batch": 3}
    mems = ckpt["plmgen_mems"]  # each process's memory (its own text streams), for an exact resume
    assert mems["world"] == 2 and mems["mems"].shape[0] == 2 and not torch.equal(mems["mems"][0], mems["mems"][1])


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_after_a_checkpoint_with_status(data, tmp_path, sig, status):
    """SIGTERM / Ctrl+C mid-training: the step finishes, last.ckpt is saved (not marked complete), exit 143 / 130."""
    out = tmp_path / "sig"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "train", "--config", str(TINY), "--data.path",
                             str(data), "--out_dir", str(out), "--train.max_steps", "100000", "--train.val_every", "1",
                             "--no-train.progress_bar"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "last.ckpt").exists():  # the first checkpoint: training is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == status, err[-3000:]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert 0 < ckpt["global_step"] < 100000 and "--resume last" in err
    assert not (out / "complete.json").exists()


def test_a_signal_handled_during_the_ranks_all_reduce_is_kept_for_the_next_step(monkeypatch, capsys):
    """Python runs a signal handler right after the blocking all-reduce returns, so a signal that arrived while the
    ranks waited in it is not in that step's reduced value: the rank must neither stop alone nor forget it (it
    did: the reduced 0 overwrote it on every rank, and a SIGTERM to a DDP run was lost), but stop with the others
    after the next step's all-reduce."""
    import types

    import torch.distributed as dist

    from plmgen.lit import StopOnSignal

    stop = StopOnSignal()
    trainer = types.SimpleNamespace(world_size=2, should_stop=False)
    module = types.SimpleNamespace(device=torch.device("cpu"))

    def reduce_while_signalled(t, op):  # the other rank had no signal; ours is handled as the reduce returns
        stop._handle(signal.SIGTERM, None)

    monkeypatch.setattr(dist, "all_reduce", reduce_while_signalled)
    stop.on_train_batch_end(trainer, module, None, None, 0)
    assert not trainer.should_stop and stop.signum == signal.SIGTERM  # not alone, not forgotten
    monkeypatch.setattr(dist, "all_reduce", lambda t, op: None)  # next step: our value is the maximum
    stop.on_train_batch_end(trainer, module, None, None, 1)
    assert trainer.should_stop and stop.signum == signal.SIGTERM


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_every_ddp_rank_after_the_same_step(data, tmp_path, sig, status):
    """Ctrl+C / SIGTERM to a two-process run (the signal reaches the process group, as from a terminal): the ranks
    agree to stop after the same step, save last.ckpt together and exit 130 / 143 (before, a rank left alone
    waited in its next collective for ever)."""
    out = tmp_path / "ddp-sig"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "train", "--config", str(TINY), "--data.path",
                             str(data), "--out_dir", str(out), "--train.max_steps", "100000", "--train.val_every", "5",
                             "--train.devices", "2", "--train.strategy", "ddp", "--train.accelerator", "cpu",
                             "--threads", "1", "--no-train.progress_bar"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "last.ckpt").exists():  # the first checkpoint: training is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=120)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == status, err[-3000:]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] > 0 and not (out / "complete.json").exists() and "--resume last" in err
