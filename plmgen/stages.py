"""Training runs that know whether they finished, and stages (the demo's) that act on it.

:func:`plmgen.train.run_training` writes ``complete.json`` into the run folder, atomically, only when the run
reached its last step; a run stopped early (Ctrl+C, SIGTERM, a crash) has none. :func:`train_stage` reuses a run
only with that marker, resumes an unfinished one exactly (``--resume last``) when it left a checkpoint, restarts it
otherwise, and says which.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

MARKER = "complete.json"


def mark_complete(run_dir: Path, step: int, max_steps: int) -> None:
    from .files import atomic_write_text

    atomic_write_text(Path(run_dir) / MARKER, json.dumps({"step": step, "max_steps": max_steps}) + "\n")


def completed(run_dir: Path) -> dict | None:
    """The completion record of a run folder, or None when the run did not finish (or never started)."""
    try:
        record = json.loads((Path(run_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "step" in record else None


def checkpoint_step(path: Path) -> int | None:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # noqa: BLE001 - unreadable: treated as no checkpoint
        return None


def train_stage(run_dir: Path, train: Callable[[str | None], None], max_steps: int, force: bool = False,
                say: Callable[[str], None] = print) -> Path:
    """Reuse, resume or (re)start the training run in ``run_dir``; returns its ``checkpoints/last.ckpt``.

    ``train(resume)`` runs the training with ``resume`` = "last" or None. ``force`` deletes the folder first.
    """
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if force and run_dir.exists():
        say(f"--force: deleting {run_dir} and training again")
        shutil.rmtree(run_dir)
    done = completed(run_dir)
    if done is not None and last.is_file():
        say(f"reusing {last} (finished at step {done['step']}; pass --force to retrain)")
        return last
    step = checkpoint_step(last) if last.is_file() else None
    if step is not None:
        say(f"{run_dir} is unfinished (stopped at step {step} of {max_steps}): resuming it exactly (--resume last)")
        train("last")
    else:
        if run_dir.exists():
            say(f"{run_dir} is unfinished with no usable checkpoint: training it from the start")
            shutil.rmtree(run_dir)
        train(None)
    if completed(run_dir) is None:  # train() returned without reaching its last step
        raise RuntimeError(f"{run_dir}: training returned before its last step")
    return last


CLI = Path(__file__).resolve().parents[1] / "cli.py"  # the repository's command line (next to the package)


def devices_per_node(train_cfg) -> int:
    """How many training processes a run's ``train`` config starts on each machine (``devices``; auto = 1)."""
    return train_cfg.devices if isinstance(train_cfg.devices, int) else 1


def processes(train_cfg) -> int:
    """How many training processes a run's ``train`` config asks for (``devices`` x ``num_nodes``; auto = 1)."""
    return devices_per_node(train_cfg) * train_cfg.num_nodes


def train_in_child(cfg, resume: str | None, init_from: str | None) -> None:
    """``python cli.py train`` for ``cfg`` in a child process, for a multi-process (DDP) run started from inside
    another command: Lightning's DDP launcher starts the other ranks by running its process's command line again,
    which must be the train command, not (say) the whole demo. The child's output goes to the terminal; its exit
    status becomes :class:`plmgen.errors.Stopped` (130 / 143) or a one-line error."""
    import signal
    import subprocess
    import sys

    from .errors import Stopped, UserError
    from .threads import usable_cores

    if not CLI.is_file():
        raise UserError(f"train.devices {cfg.train.devices}: a multi-process run needs {CLI} (run from the "
                        "repository), or set train.devices 1")
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    spec = cfg.run_dir / "launch.yaml"  # the whole experiment, as the child reads it (kept: the run's command)
    cfg.to_yaml(spec)
    # Each rank's threads set before its first op (Lightning would lower them only at launch): 5-10 % faster here;
    # the cores of this machine are shared by its own ranks (devices), not by other nodes'.
    threads = max(1, usable_cores() // devices_per_node(cfg.train))
    cmd = [sys.executable, str(CLI), "train", "--config", str(spec), "--threads", str(threads)]
    cmd += ["--resume", resume] if resume else (["--init_from", init_from] if init_from else [])
    child = subprocess.Popen(cmd)
    while True:  # Ctrl+C reaches the child too (same process group): wait for it to save and exit
        try:
            status = child.wait()
            break
        except KeyboardInterrupt:
            continue
    if status in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        raise Stopped(status - 128, f"{cfg.run_dir}: training stopped; the stage resumes when run again")
    if status != 0:
        raise UserError(f"training {cfg.run_dir} failed (exit status {status}; its error is printed above)")
