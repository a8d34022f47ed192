"""Training progress for Lightning: a rich bar counting steps on a terminal, plain lines in a log file.

Both count optimizer steps out of ``max_steps`` (Lightning's own bar counts batches of the current epoch, which
after a resume shows e.g. ``2209/3999`` and ``Epoch 0/-2`` for a 6,000-step run).
"""

from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

from .progress import EVERY_S, _Ticker, is_terminal, progress_line


class StepBar(RichProgressBar):
    """Lightning's rich bar, counting global steps out of ``max_steps``."""

    @property
    def total_train_batches(self):
        return self.trainer.max_steps if self.trainer.max_steps > 0 else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'steps':{len(self.validation_description)}}"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._update(self.train_progress_bar_id, trainer.global_step)
        self.refresh()


class LineProgress(L.Callback):
    """One line every ``every`` seconds (and at the last step) on stdout: step/total, loss, steps/s, ETA; one
    line per validation with its loss."""

    def __init__(self, every: float = EVERY_S, file=None) -> None:
        self.every, self.file, self.ticker = every, file, None

    def _print(self, text: str) -> None:
        print(text, file=self.file or sys.stdout, flush=True)

    def on_train_start(self, trainer, module) -> None:
        self.ticker = _Ticker("step", trainer.max_steps if trainer.max_steps > 0 else None, trainer.global_step,
                              self.every)
        self.ticker.last -= self.every  # a line for the first step: the log shows training started
        if trainer.global_step:
            self._print(f"resumed at step {trainer.global_step}")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.ticker is None or trainer.global_rank != 0:
            return
        self.ticker.done = trainer.global_step
        if self.ticker.due():
            loss = trainer.callback_metrics.get("train/loss")
            extra = f"loss {float(loss):.4f}" if loss is not None else ""
            self._print(progress_line("step", self.ticker.done, self.ticker.total, self.ticker.rate(), "steps",
                                      extra))

    def on_validation_end(self, trainer, module) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.global_rank == 0 and loss is not None and not trainer.sanity_checking:
            self._print(f"validation at step {trainer.global_step}: val/loss {float(loss):.4f}")


def progress_callback(enabled: bool = True):
    """The progress callback for this output: a step bar on a terminal, plain lines otherwise (None when off)."""
    if not enabled:
        return None
    return StepBar() if is_terminal() else LineProgress()
