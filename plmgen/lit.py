"""PLMModule: the LightningModule around an injected XLNet backbone and an injected objective.

One shared step for training and validation: the objective turns (model, batch, mems) into named loss terms; this
module logs them, keeps Transformer-XL memory between training batches and owns the optimiser/schedule.

Legend: B batch rows, M memory length, d model dim.

Memory: with ``objective.uses_mems`` the mems of training batch k feed batch k+1 (the pre-training pipeline makes
row b of consecutive batches continue the same text stream). Rows whose stream restarted (``stream_reset``) get
no memory: if every row restarted the mems are dropped; if only some did, those rows' mems are zeroed (the model
always attends to memory, so zero states are the nearest thing to "none" it has). Validation never uses or
changes the training mems: each validation batch starts cold, so validation loss does not depend on the step at
which it runs. Mems are not saved in checkpoints; a resumed run starts its first batch without memory.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor, nn

from plmgen.batch import Batch
from plmgen.errors import UserError
from plmgen.files import atomic_open


class NonFiniteLoss(UserError, FloatingPointError):
    """Training diverged (NaN/inf loss): an expected stop the CLI reports as one ``error:`` line (exit 2)."""


NO_DECAY_NAMES = ("r_w_bias", "r_r_bias", "r_s_bias", "mask_emb", "layer_norm", "lm_bias")


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices only; never on biases, LayerNorm, u/v/b biases or mask_emb."""
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            skip = p.ndim < 2 or name.endswith("bias") or any(k in name for k in NO_DECAY_NAMES)
            (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def rank_world(trainer) -> tuple[int, int]:
    """(global rank, world size) of a Lightning trainer; (0, 1) outside one (a module or data module in a test)."""
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


def make_optimizer(modules: list[nn.Module], lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
    """AdamW over :func:`param_groups`, with the fused kernel (one pass over each parameter instead of ~10 small
    ops: ~3% of a CPU training step) wherever every parameter is a floating-point tensor on one device."""
    groups = param_groups(modules, weight_decay)
    params = [p for g in groups for p in g["params"]]
    fused = len({p.device for p in params}) == 1 and all(p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


def warmup_linear(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then linear decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - (1.0 - min_ratio) * frac


class PLMModule(L.LightningModule):
    """``PLMModule(model, objective, train_cfg, meta)``; ``meta`` (plain dict: the experiment config, tokenizer
    path) is stored under ``checkpoint["plmgen"]`` so ``plmgen.train.load_checkpoint`` can rebuild everything."""

    def __init__(self, model: nn.Module, objective: nn.Module, train_cfg, meta: dict | None = None) -> None:
        super().__init__()
        self.model, self.objective, self.train_cfg = model, objective, train_cfg
        if not getattr(objective, "query_stream", True) and hasattr(model, "train_query_stream"):
            model.train_query_stream(False)  # no gradient ever reaches it (Objective.query_stream)
        self.meta = meta or {}
        self._mems: list[Tensor] | None = None
        self._val_sums: dict[str, list[Tensor]] = {}

    # -- the shared step -------------------------------------------------------------------------------------------
    def _mems_for(self, batch: Batch) -> list[Tensor] | None:
        mems = self._mems
        if mems is None or not self.objective.uses_mems:
            return None
        dev = batch["input_ids"].device
        if mems[0].device != dev:  # restored from a checkpoint (kept on the CPU there)
            mems = self._mems = [m.to(dev) for m in mems]
        if mems[0].shape[0] != batch["input_ids"].shape[0]:
            return None  # a batch of another size (parallel data's last batch): nothing to continue
        reset = batch.get("stream_reset")
        if reset is not None and bool(reset.any()):
            if bool(reset.all()):
                return None
            # Rows whose stream wrapped alone (the built-in pipeline wraps all rows together) get zero memory:
            # zero keys/values carry no content, though their columns still take a little softmax mass.
            keep = (~reset).to(mems[0].dtype)[:, None, None]  # [B, 1, 1]
            mems = [m * keep for m in mems]
        return mems

    def step(self, batch: Batch, stage: str):
        training = stage == "train"
        mems = self._mems_for(batch) if training else None
        out = self.objective(self.model, batch, mems=mems)
        if not torch.isfinite(out.loss.detach()):
            terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in out.terms.items())
            hint = "lower train.lr or raise train.warmup_steps"
            if self.train_cfg.precision != "fp32":
                hint += ", or use train.precision fp32"
            raise NonFiniteLoss(f"training stopped: non-finite {stage} loss {float(out.loss.detach())} at step "
                                f"{self.global_step} ({terms}); {hint}; --resume last continues from the last "
                                "checkpoint")
        if training and self.objective.uses_mems:
            self._mems = [m.detach() for m in out.mems] if out.mems else None
        return out

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed torch's RNG from (train.seed, rank, step): every step's random draws (factorization orders, span
        masks, dropout) are a pure function of the step, so a resumed run draws exactly what an uninterrupted one
        would have (Lightning restores weights, optimizer and data position, not RNG streams)."""
        rank, _ = rank_world(self._trainer)
        torch.manual_seed((self.train_cfg.seed * 1_000_003 + rank) * 1_000_003 + self.global_step)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        out = self.step(batch, "train")
        B = int(batch["input_ids"].shape[0])
        self.log("train/loss", out.loss.detach(), prog_bar=True, batch_size=B)
        for name, value in out.terms.items():
            self.log(f"train/{name}", value.detach(), batch_size=B)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=False, batch_size=B)
        return out.loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Global grad-norm clipping (``train.grad_clip``), here rather than through the Trainer: Lightning's
        mixed-precision plugin refuses to clip for a fused optimizer even in bf16, where nothing is unscaled."""
        clip = self.train_cfg.grad_clip
        if clip:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        out = self.step(batch, "val")
        # Token-weighted sums, reduced over devices at the end: the mean per token, not a mean of batch means.
        for name, value in [("loss", out.loss)] + list(out.terms.items()):
            n = 1 if name == "loss" else max(1, int(out.n_tokens.get(name, 1)))
            s = self._val_sums.setdefault(name, [torch.zeros((), device=self.device, dtype=torch.float64)] * 2)
            s[0] = s[0] + value.detach().double() * n
            s[1] = s[1] + n

    def on_validation_epoch_end(self) -> None:
        for name, (total, count) in self._val_sums.items():
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
            count = self.trainer.strategy.reduce(count, reduce_op="sum")
            mean = float(total / count.clamp_min(1))
            self.log(f"val/{name}", mean, prog_bar=name == "loss", sync_dist=False)
            if name != "loss":  # perplexity per token of each loss term
                self.log(f"val/ppl_{name}", math.exp(min(mean, 50.0)), sync_dist=False)
        self._val_sums = {}

    # -- optimisation ----------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        c = self.train_cfg
        opt = make_optimizer([self.model, self.objective], c.lr, c.weight_decay, (c.adam_beta1, c.adam_beta2), c.adam_eps)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_linear(s, c.warmup_steps, c.max_steps, c.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoint metadata (plain dicts: loadable with torch.load(weights_only=True)) -----------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["plmgen"] = self.meta
        checkpoint["plmgen_mems"] = self._gathered_mems()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the Transformer-XL memory the next training batch continues from (so a resumed run is exact)."""
        saved = checkpoint.get("plmgen_mems")
        self._mems = None
        if not saved:
            return
        rank, world = rank_world(self._trainer)
        if saved["world"] != world:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(f"checkpoint memory was saved by {saved['world']} processes, resuming on {world}: "
                           "training continues with empty memory")
            return
        self._mems = list(saved["mems"][rank].unbind(0))  # per layer [B, M, d]; moved to the device when used

    def _gathered_mems(self) -> dict[str, Any] | None:
        """Every process's training memory as one CPU tensor [world, n_layer, B, M, d] (every rank calls this while
        a checkpoint is assembled; rank 0 writes it), or None when there is none to carry."""
        _, world = rank_world(self._trainer)
        mems = torch.stack(self._mems) if self._mems else None
        if world > 1:
            has = self.all_gather(torch.tensor(mems is not None, device=self.device))
            if not bool(has.all()):
                return None
            mems = self.all_gather(mems)  # [world, n_layer, B, M, d]
        elif mems is not None:
            mems = mems[None]
        return None if mems is None else {"world": world, "mems": mems.detach().cpu()}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint writes as a temp file in the target folder + fsync + ``os.replace`` (atomic on one filesystem).

    Lightning's own ``_atomic_save`` stages the file in an fsspec transaction whose temp file sits in the system
    temp dir and is ``shutil.move``-d into place: across filesystems that is a copy, not atomic.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)


class StopOnSignal(L.Callback):
    """Ctrl+C (SIGINT) or SIGTERM during training: finish the current step, stop, and let the caller save
    ``last.ckpt`` and exit with 128 + the signal number. A second Ctrl+C aborts at once.

    Installed when training starts, after Lightning's own handlers (which it restores at teardown). Under several
    processes (DDP) every rank installs it and, after each step, the ranks agree on the largest signal any of them
    received (one all-reduce of a scalar), so all stop after the same step and save one checkpoint together: a rank
    that stopped alone would leave the others waiting in their next collective.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def on_train_start(self, trainer, module) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        import signal

        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        name = signal.Signals(signum).name
        print(f"\n{name}: stopping after this step and saving a checkpoint (Ctrl+C again to abort)", flush=True)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        signum = self.signum
        if trainer.world_size > 1:
            import torch.distributed as dist

            got = torch.tensor([signum or 0], device=module.device)
            dist.all_reduce(got, op=dist.ReduceOp.MAX)
            signum = int(got) or None  # what every rank agrees on
            # A signal handled while this rank waited in the all-reduce (Python runs the handler right after it
            # returns) is not in ``got``: keep it for the next step's all-reduce instead of overwriting it with None
            # (which lost it on every rank and left the run training on).
            if signum is not None:
                self.signum = signum
        if signum is not None:
            trainer.should_stop = True
