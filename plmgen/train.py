"""``python cli.py train``: pre-train or fine-tune an XLNet with Lightning; ``load_checkpoint`` for everything else.

A run lives in one folder (``runs/<name>`` unless ``--out_dir``):

    config.yaml          the resolved ExperimentConfig (vocab size set from the tokenizer)
    tokenizer.model      sentencepiece model (+ .vocab): given, taken from --init_from, or trained on the train split
    checkpoints/         last.ckpt (every validation and at the end) and best-step=N.ckpt (lowest val/loss)
    logs/csv, logs/tb    CSV and TensorBoard logs

Checkpoints are written through :class:`plmgen.lit.AtomicCheckpointIO` (temp file in the same folder, fsync, ``os.replace``).
Lightning's own ``_atomic_save`` writes into an fsspec transaction whose temp file lives in the system temp dir
and is then ``shutil.move``-d; when /tmp is another filesystem that move is a copy, and a crash mid-copy leaves a
truncated ``last.ckpt`` - hence our own IO. Every checkpoint keeps the experiment config and tokenizer path as plain
data under ``checkpoint["plmgen"]``, so ``torch.load(..., weights_only=True)`` reads it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plmgen.config import DataConfig, ExperimentConfig, ModelConfig, ObjectiveConfig, TrainConfig
from plmgen.errors import Stopped, UserError
from plmgen.files import fsync_file, temp_beside
from plmgen.stages import mark_complete

# Fields that fix the backbone's parameter shapes: --init_from takes them from the checkpoint.
SHAPE_FIELDS = ("vocab_size", "d_model", "n_layer", "n_head", "d_inner", "untie_r", "ff_activation")


@dataclass
class LoadedCheckpoint:
    model: nn.Module  # XLNet, eval mode, on CPU
    objective: nn.Module  # the objective it was trained with (its own heads loaded)
    config: ExperimentConfig
    tokenizer_path: str | None


def make_objective(cfg: ExperimentConfig, tokenizer) -> nn.Module:
    """The objective named by ``cfg.objective`` (registry in plmgen.objectives)."""
    from plmgen.objectives import SpecialIds, build_objective

    special = SpecialIds.from_tokenizer(tokenizer) if tokenizer is not None else None
    return build_objective(cfg.objective, cfg.model, special)


def train(
    name: str = "run",
    model: ModelConfig = ModelConfig(),
    objective: ObjectiveConfig = ObjectiveConfig(),
    data: DataConfig = DataConfig(),
    train: TrainConfig = TrainConfig(),
    out_dir: str | None = None,
    tokenizer: str | None = None,
    init_from: str | None = None,
    resume: str | None = None,
    threads: int | None = None,
) -> Path:
    """Pre-train or fine-tune an XLNet; returns the run folder.

    Args:
        name: run name; the run folder is runs/<name> unless out_dir is given.
        model: backbone hyper-parameters.
        objective: training objective (name and its knobs).
        data: data pipeline (kind pretrain or parallel).
        train: optimisation and Trainer settings.
        out_dir: run folder (default runs/<name>).
        tokenizer: sentencepiece .model to use (default: the run folder's, trained on the train split if missing).
        init_from: checkpoint to start from (backbone weights; the objective's own too when its name matches).
        resume: continue a run: "last" (the run folder's last.ckpt) or a checkpoint path.
        threads: torch CPU threads (default: one per usable core; try 1 when other jobs keep the cores busy).
    """
    from plmgen.threads import setup_threads

    setup_threads(threads)
    cfg = ExperimentConfig(name=name, out_dir=out_dir, tokenizer=tokenizer, model=model, objective=objective,
                           data=data, train=train)
    return run_training(cfg, init_from=init_from, resume=resume).run_dir


@dataclass
class TrainedRun:
    run_dir: Path
    trainer: Any
    module: Any


def run_training(cfg: ExperimentConfig, *, init_from: str | None = None, resume: str | None = None,
                 objective: nn.Module | None = None, callbacks: list | None = None) -> TrainedRun:
    """The train command without the CLI (tests inject ``objective``; the default comes from the registry)."""
    run_dir = cfg.run_dir
    ckpt_dir = run_dir / "checkpoints"
    if resume and init_from:
        raise UserError("--resume and --init_from exclude each other (resume restores all weights)")
    ckpt_path = _resume_path(resume, ckpt_dir)
    recorded = check_resume(ckpt_path, cfg) if ckpt_path is not None else None
    if ckpt_path is None and (ckpt_dir / "last.ckpt").exists():
        raise UserError(f"{run_dir} already holds a run; pass --resume last to continue it, or another --name/--out_dir")

    import lightning as L  # after the argument checks: a bad flag answers at once

    from plmgen.data.module import PLMDataModule
    from plmgen.lit import PLMModule, StopOnSignal
    from plmgen.threads import say_threads
    from plmgen.model import XLNet

    init = load_checkpoint(init_from) if init_from else None
    if init is not None:
        init_model = init.config.model
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **{f: getattr(init_model, f) for f in SHAPE_FIELDS}))
    tok, tok_path = _tokenizer(cfg, run_dir, init.tokenizer_path if init else None)
    if recorded is not None and tok.vocab_size != recorded.model.vocab_size:
        raise UserError(f"--resume: the tokenizer has {tok.vocab_size} pieces, the checkpoint's model "
                        f"{recorded.model.vocab_size}")
    if tok.vocab_size != cfg.model.vocab_size:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.vocab_size))
    cfg = dataclasses.replace(cfg, tokenizer=str(tok_path))
    cfg.to_yaml(run_dir / "config.yaml")

    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    # Subnormal floats are ~50x slower on x86 CPUs. Adam's moments of rows that get no gradient decay by beta per
    # step towards that range: on the demo's optimizer state with zero gradients, the fused AdamW step took 98 ms
    # instead of 1.9 ms once they appeared (measured). Flushing them to zero costs nothing.
    torch.set_flush_denormal(True)
    backbone = XLNet(cfg.model)
    objective = objective if objective is not None else make_objective(cfg, tok)
    if init is not None:
        _init_weights(backbone, objective, init, cfg)
    module = PLMModule(backbone, objective, cfg.train, meta={"config": cfg.to_dict(), "tokenizer": str(tok_path)})
    datamodule = PLMDataModule(cfg, tok)
    say_threads()
    stop = StopOnSignal()
    trainer = _trainer(cfg, ckpt_dir, run_dir, [*(callbacks or []), stop])
    _fit(trainer, module, datamodule, ckpt_path, stop)
    trainer.save_checkpoint(ckpt_dir / "last.ckpt", weights_only=False)  # the final state, whatever the val schedule
    if stop.signum is not None:
        raise Stopped(stop.signum, f"saved {ckpt_dir / 'last.ckpt'} at step {trainer.global_step}; "
                                   f"continue with --resume last")
    if trainer.global_step >= cfg.train.max_steps:
        mark_complete(run_dir, trainer.global_step, cfg.train.max_steps)
    return TrainedRun(run_dir, trainer, module)


def _fit(trainer, module, datamodule, ckpt_path: Path | None, stop) -> None:
    """trainer.fit, with Lightning's own exits on signals (sys.exit(1) after a second Ctrl+C, SIGTERMException
    under multi-process strategies) turned into :class:`Stopped` so the CLI exits with 130 / 143."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    except SIGTERMException:
        raise Stopped(signal.SIGTERM) from None
    except SystemExit:
        raise Stopped(stop.signum or signal.SIGINT) from None


def _resume_path(resume: str | None, ckpt_dir: Path) -> Path | None:
    if not resume:
        return None
    path = ckpt_dir / "last.ckpt" if resume == "last" else Path(resume)
    if not path.is_file():
        raise UserError(f"--resume: {path} not found")
    return path


# What --resume may change: how long to run and what is logged/printed (recorded truthfully in config.yaml); the
# rest (model, objective, data, optimiser, precision, devices) must match the checkpoint, or the run would silently
# continue as something else (the scheduler's base learning rates, for one, come back from the checkpoint).
RESUME_MAY_CHANGE = ("name", "out_dir", "tokenizer", "model.vocab_size", "train.max_steps", "train.val_every",
                     "train.log_every", "train.progress_bar", "data.num_workers")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_resume(ckpt_path: Path, cfg: ExperimentConfig) -> ExperimentConfig:
    """Refuse to resume from an unreadable checkpoint or with flags that differ from the checkpoint's recorded
    config (outside :data:`RESUME_MAY_CHANGE`) or another tokenizer; returns the recorded config."""
    _, recorded = read_checkpoint(ckpt_path)
    now, then = _flat(cfg.to_dict()), _flat(recorded.to_dict())
    differ = [k for k in sorted(set(now) | set(then)) if k not in RESUME_MAY_CHANGE and now.get(k) != then.get(k)]
    if differ:
        shown = ", ".join(f"{k} ({then.get(k)!r} -> {now.get(k)!r})" for k in differ[:4])
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        raise UserError(f"--resume {ckpt_path}: the checkpoint was trained with other settings: {shown}{more}; "
                        f"resume may change only {', '.join(RESUME_MAY_CHANGE[3:])}; start a new run (another --name) "
                        "with --init_from to change the rest")
    local = cfg.run_dir / "tokenizer.model"
    given = Path(cfg.tokenizer) if cfg.tokenizer else None
    if given is not None and local.is_file() and given.is_file() and given.read_bytes() != local.read_bytes():
        raise UserError(f"--resume: --tokenizer {given} is not the run's tokenizer {local}")
    return recorded


def _tokenizer(cfg: ExperimentConfig, run_dir: Path, init_tokenizer: str | None):
    """Load the given / inherited / run folder's tokenizer, or train one on the train split; keep a copy in run_dir."""
    from plmgen.tokenizer import Tokenizer

    local = run_dir / "tokenizer.model"
    source = cfg.tokenizer or init_tokenizer
    if source and Path(source).resolve() != local.resolve():
        tok = Tokenizer.load(source)  # validates before copying
        for ext in ("model", "vocab"):
            src = Path(source).with_suffix("." + ext)
            if src.is_file():
                _atomic_copy(src, local.with_suffix("." + ext))
        return Tokenizer.load(local), local
    if local.is_file():
        return Tokenizer.load(local), local
    texts = [line for doc in _tokenizer_documents(cfg) for line in doc]
    Tokenizer.train(texts, out_prefix=run_dir / "tokenizer", vocab_size=cfg.model.vocab_size, seed=cfg.train.seed)
    return Tokenizer.load(local), local


def _tokenizer_documents(cfg: ExperimentConfig) -> list[list[str]]:
    from plmgen.data.module import pretrain_documents

    if cfg.data.kind == "pretrain":
        return pretrain_documents(cfg, "train")
    from plmgen.data.splits import load_pairs

    pairs = load_pairs(cfg.data.path, "train")
    return [[s for s, _ in pairs], [t for _, t in pairs]]


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(dst)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        fsync_file(tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _init_weights(backbone: nn.Module, objective: nn.Module, init: LoadedCheckpoint, cfg: ExperimentConfig) -> None:
    backbone.load_state_dict(init.model.state_dict())
    if init.config.objective.name == cfg.objective.name:
        try:
            objective.load_state_dict(init.objective.state_dict())
        except RuntimeError as e:  # same objective, other head shapes (e.g. length classes): backbone only
            print(f"note: --init_from: objective weights not loaded ({str(e).splitlines()[0]})")


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("\U0001f4a1 Tip")  # Lightning's adverts for its cloud products


def quiet_lightning() -> None:
    """Silence third-party noise every stage printed: Lightning's tips, a torch pytree deprecation raised inside
    Lightning, the resume warning that the checkpoint folder is not empty (it is meant to hold last.ckpt) and two
    DDP warnings."""
    import lightning_utilities.core.rank_zero as rank_zero

    if not any(isinstance(f, _NoTips) for f in rank_zero.log.filters):
        rank_zero.log.addFilter(_NoTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Under DDP: validation sums are reduced over ranks by PLMModule itself (sync_dist would reduce twice), and a
    # deprecation inside Lightning's own all_gather.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(.*sync_dist=True\)")
    warnings.filterwarnings("ignore", message=r"torch.distributed.nn.functional.all_gather is deprecated")


def _trainer(cfg: ExperimentConfig, ckpt_dir: Path, run_dir: Path, callbacks: list):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from plmgen.lit import AtomicCheckpointIO
    from plmgen.train_progress import progress_callback

    quiet_lightning()
    t = cfg.train
    has_val = cfg.data.kind == "parallel" or (cfg.data.use_benchmark_text and cfg.data.val_batches > 0)
    if has_val:
        ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="best-{step}", monitor="val/loss", mode="min",
                               save_top_k=1, save_last=True, auto_insert_metric_name=True)
    else:
        ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="{step}", every_n_train_steps=t.val_every, save_top_k=1,
                               save_last=True)
    progress = progress_callback(t.progress_bar)
    callbacks = [ckpt, *callbacks, *([progress] if progress else [])]
    return L.Trainer(
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision={"fp32": "32", "bf16": "bf16-mixed"}[t.precision],  # Lightning's spelling
        # gradient clipping: PLMModule.on_before_optimizer_step (train.grad_clip)
        accumulate_grad_batches=t.accumulate_grad_batches,
        val_check_interval=t.val_every if has_val else None,
        check_val_every_n_epoch=None,
        limit_val_batches=None if has_val else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every,
        default_root_dir=run_dir,
        callbacks=callbacks,
        logger=[CSVLogger(run_dir / "logs", name="csv"), TensorBoardLogger(run_dir / "logs", name="tb")],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=isinstance(progress, ProgressBar),  # plain lines (not a terminal) are a plain callback
        enable_model_summary=False,
    )


# -- loading ---------------------------------------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """A plmgen Lightning checkpoint -> backbone + objective with weights on ``device`` (tensors mapped straight
    there, modules built there), the experiment config, tokenizer path."""
    from plmgen.model import XLNet, check_state_dict
    from plmgen.tokenizer import Tokenizer

    path = Path(path)
    ckpt, cfg = read_checkpoint(path, device)
    tok_path = _checkpoint_tokenizer(path, (ckpt["plmgen"] or {}).get("tokenizer"))
    tok = Tokenizer.load(tok_path) if tok_path else None
    state = ckpt["state_dict"]
    parts = {"model": lambda: XLNet(cfg.model), "objective": lambda: make_objective(cfg, tok)}
    with torch.device("meta"):  # shapes first: a checkpoint's numbers must not make us allocate anything
        for prefix, build in parts.items():
            check_state_dict(str(path), build(), state, prefix)
    built = {}
    for prefix, build in parts.items():
        with torch.device(device):
            built[prefix] = build()
        built[prefix].load_state_dict({k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")})
    return LoadedCheckpoint(built["model"].eval(), built["objective"].eval(), cfg, tok_path)


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[dict, ExperimentConfig]:
    """A plmgen checkpoint file read without running code (``weights_only``), and its experiment config, checked
    against :data:`plmgen.model.MODEL_LIMITS`; UserError for a missing, truncated, foreign or malformed file."""
    import pickle
    import zipfile

    from plmgen.model import check_model_limits

    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its directory is at the end of the file
        raise UserError(f"{path}: not a readable checkpoint (not a zip archive, as every torch checkpoint is: a "
                        "truncated copy, or another kind of file)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:  # torch's own message advises weights_only=False, i.e. running the file's code
        raise UserError(f"{path}: not a readable checkpoint (it holds objects that a weights-only load refuses to "
                        "build: not a plmgen checkpoint)") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first})") from None
    meta = ckpt.get("plmgen") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise UserError(f"{path}: not a plmgen training checkpoint (no 'plmgen' entry)")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"{path}: checkpoint has no state_dict")
    try:
        cfg = ExperimentConfig.from_dict(meta["config"])
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: bad config in checkpoint: {e}") from None
    check_model_limits(cfg.model, str(path))
    return ckpt, cfg


def _checkpoint_tokenizer(ckpt_path: Path, recorded: str | None) -> str | None:
    """The run folder's tokenizer next to the checkpoint (runs move), else the path recorded at training time."""
    beside = ckpt_path.resolve().parent.parent / "tokenizer.model"
    if beside.is_file():
        return str(beside)
    return recorded if recorded and Path(recorded).is_file() else None
