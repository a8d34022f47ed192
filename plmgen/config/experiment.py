"""One training run: what it reads (``DataConfig``), how it optimises (``TrainConfig``) and the whole
``ExperimentConfig`` (model + objective + data + train) that experiments/configs/*.yaml hold."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError
from .base import YamlConfig, check, parse_precision
from .model import ModelConfig
from .objective import ObjectiveConfig


MOVED_TO_DATA = ("reuse_len", "bi_data")  # once model fields; data settings since they only shape the batches


@dataclasses.dataclass
class DataConfig(YamlConfig):
    """What the model reads. ``kind`` picks the pipeline: ``pretrain`` (plmgen/data/pretrain.py, XLNet text streams)
    or ``parallel`` (plmgen/data/parallel.py, ``[source <sep> target]`` pairs)."""

    kind: Literal["pretrain", "parallel"] = "pretrain"
    path: str = "data/lo-de-en"  # a prepared folder (python cli.py prepare ...)
    text_files: list[str] = dataclasses.field(default_factory=list)  # pretrain: extra plain-text files (one doc each)
    use_benchmark_text: bool = True  # pretrain: both sides of path's train split (dev split for validation)
    seq_len: int = 128  # tokens per sequence (pretrain: reuse part + A <sep> B <sep> <cls>)
    batch_size: int = 16  # sequences per device and step (pretrain: parallel text streams per device)
    nsp_true_ratio: float = 0.5  # pretrain: share of sequences whose B is the true continuation of A
    ab_layout: bool = True  # pretrain: [A <sep> B <sep> <cls>] layout; False = plain stream chunks, segment 0
    reuse_len: int = 0  # pretrain: the first reuse_len positions are cached as memory and the streams advance by
    #   that much per step (reference reuse_len); 0 = cache the whole segment, advance by a whole segment
    bi_data: bool = False  # pretrain: the second half of the rows read the first half's streams right to left,
    #   with the backward positional table (reference bi_data); batch_size must be even
    val_batches: int = 16  # most validation batches per evaluation
    num_workers: int = 0  # DataLoader worker processes
    seed: int = 0  # data order: pretrain A/B cuts and random-B draws, parallel shuffling (pure functions of seed, rank, batch index)
    # parallel-kind knobs (read by plmgen.data.parallel): 0 = split seq_len between the sides
    max_src_len: int = 0
    max_tgt_len: int = 0
    max_pairs: int = 0  # 0 = all training pairs
    max_val_pairs: int = 0  # 0 = the whole dev split
    batch_tokens: int = 0  # parallel: > 0 = length-bucketed training batches of at most this many padded tokens

    def __post_init__(self) -> None:
        n = "DataConfig"
        check(self.kind in ("pretrain", "parallel"), n, f"kind must be 'pretrain' or 'parallel', got {self.kind!r}")
        check(isinstance(self.text_files, list), n, f"text_files must be a list of paths, got {self.text_files!r}")
        for f in ("seq_len", "batch_size"):
            check(isinstance(getattr(self, f), int) and getattr(self, f) > 0, n, f"{f} must be a positive int, got {getattr(self, f)!r}")
        for f in ("val_batches", "num_workers", "reuse_len", "max_src_len", "max_tgt_len", "max_pairs", "max_val_pairs",
                  "batch_tokens"):
            check(isinstance(getattr(self, f), int) and getattr(self, f) >= 0, n, f"{f} must be an int >= 0, got {getattr(self, f)!r}")
        check(0.0 <= self.nsp_true_ratio <= 1.0, n, f"nsp_true_ratio must be in [0, 1], got {self.nsp_true_ratio!r}")
        check(isinstance(self.bi_data, bool), n, f"bi_data must be true or false, got {self.bi_data!r}")
        check(not self.bi_data or self.kind == "pretrain", n, "bi_data applies to kind pretrain only (text streams)")
        check(not self.bi_data or self.batch_size % 2 == 0, n,
              f"bi_data needs an even batch_size (forward + backward halves), got {self.batch_size}")
        check(self.kind == "parallel" or self.use_benchmark_text or bool(self.text_files), n,
                    "pretrain data needs use_benchmark_text: true or some text_files")


@dataclasses.dataclass
class TrainConfig(YamlConfig):
    """Optimisation and the Lightning Trainer (plmgen/lit.py, plmgen/train.py)."""

    max_steps: int = 1000
    lr: float = 5e-4
    warmup_steps: int = 100  # linear warm-up from 0, then linear decay to lr * min_lr_ratio at max_steps
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01  # AdamW; never on biases, LayerNorm, u/v/b attention biases, mask_emb
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_eps: float = 1e-6
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    accumulate_grad_batches: int = 1
    precision: str = "fp32"  # fp32 | bf16 (bfloat16 mixed precision, CPU and GPU)
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: int | str = "auto"  # devices per node (DDP when > 1)
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_spawn | ... (Lightning strategy name)
    val_every: int = 200  # validate (and checkpoint) every this many training steps
    log_every: int = 10
    seed: int = 0  # model: init weights, tokenizer sampling, each step's orders/spans/dropout ((seed, rank, step))
    progress_bar: bool = True

    def __post_init__(self) -> None:
        n = "TrainConfig"
        self.precision = parse_precision(self.precision, "train.precision")
        for f in ("max_steps", "accumulate_grad_batches", "num_nodes", "val_every", "log_every"):
            check(isinstance(getattr(self, f), int) and getattr(self, f) > 0, n, f"{f} must be a positive int, got {getattr(self, f)!r}")
        check(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, n, f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        check(self.lr > 0, n, f"lr must be > 0, got {self.lr!r}")
        check(0.0 <= self.min_lr_ratio <= 1.0, n, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        check(self.weight_decay >= 0, n, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        for f in ("adam_beta1", "adam_beta2"):
            check(0.0 <= getattr(self, f) < 1.0, n, f"{f} must be in [0, 1), got {getattr(self, f)!r}")
        check(self.adam_eps > 0, n, f"adam_eps must be > 0, got {self.adam_eps!r}")
        check(self.grad_clip >= 0, n, f"grad_clip must be >= 0, got {self.grad_clip!r}")
        check(self.devices == "auto" or (isinstance(self.devices, int) and self.devices > 0), n,
                    f"devices must be 'auto' or a positive int, got {self.devices!r}")


@dataclasses.dataclass
class ExperimentConfig(YamlConfig):
    """One run: the YAML files under experiments/configs are this, and ``python cli.py train`` takes its fields
    as flags (``--model.mem_len 0 --train.max_steps 5``)."""

    name: str = "run"
    out_dir: str | None = None  # default runs/<name>
    tokenizer: str | None = None  # a sentencepiece .model to use; default: <out_dir>/tokenizer.model (trained if missing)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        n = "ExperimentConfig"
        check(isinstance(self.name, str) and self.name.strip() not in ("", ".", "..")
                    and not any(c in self.name for c in "/\\\0"), n,
                    f"name must be one folder name (no '/', not '.' or '..'), got {self.name!r}")
        d = self.data
        if d.kind == "pretrain":
            functional = 3 if d.ab_layout else 0  # <sep> <sep> <cls>
            check(d.reuse_len + functional + 2 <= d.seq_len, n,
                  f"data.seq_len ({d.seq_len}) must exceed data.reuse_len ({d.reuse_len}) + {functional + 1}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        """As ``YamlConfig.from_dict``; a config written before ``reuse_len``/``bi_data`` moved from ``model`` to
        ``data`` (older checkpoints and run folders) is read with them under ``data``."""
        if isinstance(d, dict) and isinstance(d.get("model"), dict) and any(k in d["model"] for k in MOVED_TO_DATA):
            model = dict(d["model"])
            data = dict(d.get("data") or {})
            for k in MOVED_TO_DATA:
                if k in model:
                    value = model.pop(k)
                    if k in data and data[k] != value:
                        raise UserError(f"ExperimentConfig: model.{k} ({value!r}) is data.{k} now, which says "
                                        f"{data[k]!r}; give it once, as data.{k}")
                    data[k] = value
            d = {**d, "model": model, "data": data}
        return super().from_dict(d)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs") / self.name
