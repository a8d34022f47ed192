"""What a study records beside the scores: executed FLOPs and predicted tokens per training step, checkpoints at
given steps, and the provenance block (code, command, data, tokenizer, checkpoints, software, hardware).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one real training step (forward + backward
of the objective on a batch of the configured pipeline, after one warm-up step so Transformer-XL memory is in
place): the matmul/attention FLOPs that step executes, whatever the objective does with its rows and streams.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

from plmgen.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[2]
# terms that are not token predictions (nsp: one row each; length: one class per target)
NON_TOKEN_TERMS = ("nsp", "length")


def _device(cfg: ExperimentConfig) -> torch.device:
    return torch.device("cuda" if cfg.train.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu")


def measure_step(cfg: ExperimentConfig, tokenizer, steps: int = 2) -> dict[str, float]:
    """Mean executed FLOPs and predicted tokens of ``steps`` training steps (after one uncounted warm-up step)."""
    from torch.utils.flop_counter import FlopCounterMode

    from plmgen.data.module import PLMDataModule
    from plmgen.model import XLNet
    from plmgen.train import make_objective

    torch.manual_seed(cfg.train.seed)
    dev = _device(cfg)
    model, objective = XLNet(cfg.model).to(dev).train(), make_objective(cfg, tokenizer).to(dev).train()
    dm = PLMDataModule(cfg, tokenizer)
    dm.setup("fit")
    batches = iter(dm.train_dataloader())
    mems, flops, tokens = None, 0, 0
    for i in range(steps + 1):
        batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in next(batches).items()}
        counter = FlopCounterMode(display=False)
        with counter:
            out = objective(model, batch, mems=mems if objective.uses_mems else None)
            out.loss.backward()
        model.zero_grad(set_to_none=True)
        objective.zero_grad(set_to_none=True)
        mems = [m.detach() for m in out.mems] if out.mems else None
        if i:  # step 0 warms up the memory
            flops += counter.get_total_flops()
            tokens += sum(int(n) for k, n in out.n_tokens.items() if k not in NON_TOKEN_TERMS)  # counts may be tensors
    return {"flops_per_step": flops / steps, "tokens_per_step": tokens / steps}


class SaveAtSteps(L.Callback):
    """Checkpoint ``<dir>/budget-<step>.ckpt`` when training reaches each of ``steps`` (through the trainer's
    checkpoint IO, so atomically). A resumed run keeps saving the budgets still ahead of it."""

    def __init__(self, steps: list[int], dirpath: Path) -> None:
        self.steps, self.dirpath = set(steps), Path(dirpath)

    @staticmethod
    def path(dirpath: Path, step: int) -> Path:
        return Path(dirpath) / f"budget-{step}.ckpt"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step in self.steps and not self.path(self.dirpath, step).exists():
            trainer.save_checkpoint(self.path(self.dirpath, step), weights_only=False)


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(argv: list[str] | None = None) -> dict[str, Any]:
    """Code, command, software and hardware of this invocation (the data/tokenizer/checkpoint hashes come from the
    runner, which knows the files)."""
    import lightning
    import sacrebleu

    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(status),
        "command": " ".join(shlex.quote(a) for a in (argv if argv is not None else [sys.executable, *sys.argv])),
        "torch": str(torch.__version__), "lightning": str(lightning.__version__), "sacrebleu": str(sacrebleu.__version__),
        "python": platform.python_version(),
        "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
