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
