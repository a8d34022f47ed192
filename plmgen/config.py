"""Typed configuration: the one source of truth for every knob in plmgen.

Each config is a dataclass validated in ``__post_init__`` (a bad value raises ``ValueError`` naming the field) and
round-trips through YAML. ``ModelConfig.named("tiny"|"small"|"base"|"large")`` gives the standard sizes.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

C = TypeVar("C", bound="YamlConfig")


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to disk, so a rename after it never exposes an empty or partial file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def user_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a temp file or folder (mkstemp/mkdtemp make them private, rw-------) the permissions a plain
    ``open``/``mkdir`` would, under the user's umask, before it is renamed into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def temp_beside(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """``mkstemp`` in ``path``'s folder (so the final ``os.replace`` is atomic) with the user's umask permissions."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    user_mode(tmp)
    return fd, tmp


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder, fsync, rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclasses.dataclass
class YamlConfig:
    """Mixin: dict/YAML round trip for a (possibly nested) config dataclass.

    It is itself a (field-less) dataclass so jsonargparse treats every config as a plain dataclass: flags like
    ``--model.d_model`` appear in ``--help`` and a bad key gives a one-line error.
    """

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__}: expected a mapping, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(fields)}")
        kwargs = {}
        for name, value in d.items():
            sub = _nested_type(cls, name)
            kwargs[name] = sub.from_dict(value) if sub is not None and isinstance(value, dict) else value
        return cls(**kwargs)

    def to_yaml(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls: type[C], path: str | os.PathLike) -> C:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from None
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from None


def _nested_type(cls: type, name: str) -> type | None:
    """The YamlConfig subclass a field holds, if any (resolves string annotations)."""
    hints = _type_hints(cls)
    t = hints.get(name)
    return t if isinstance(t, type) and issubclass(t, YamlConfig) else None


def _type_hints(cls: type) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - only for exotic annotations
        return {}


def _check(cond: bool, cls: str, msg: str) -> None:
    if not cond:
        from .errors import UserError  # a ValueError: the CLI prints it as one line

        raise UserError(f"{cls}: {msg}")


@dataclasses.dataclass
class ModelConfig(YamlConfig):
    """XLNet backbone hyper-parameters (names follow the reference implementation)."""

    vocab_size: int = 32000
    d_model: int = 1024
    n_layer: int = 24
    n_head: int = 16
    d_inner: int = 4096
    ff_activation: Literal["gelu", "relu", "gelu_new", "silu"] = "gelu"
    dropout: float = 0.1
    dropatt: float = 0.1
    mem_len: int = 0  # 0 = no Transformer-XL memory is cached
    reuse_len: int = 0  # 0 = cache the whole segment; else only its first reuse_len positions
    clamp_len: int = -1  # < 0: no clamping of relative distances
    bi_data: bool = False
    same_length: bool = False
    attn_type: Literal["bi", "uni"] = "bi"
    untie_r: bool = True  # per-layer u/v/b biases (False: one set shared by all layers)
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        n = "ModelConfig"
        for f in ("vocab_size", "d_model", "n_layer", "n_head", "d_inner"):
            _check(isinstance(getattr(self, f), int) and getattr(self, f) > 0, n, f"{f} must be a positive int, got {getattr(self, f)!r}")
        _check(self.d_model % self.n_head == 0, n, f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        for f in ("mem_len", "reuse_len"):
            _check(isinstance(getattr(self, f), int) and getattr(self, f) >= 0, n, f"{f} must be an int >= 0, got {getattr(self, f)!r}")
        _check(isinstance(self.clamp_len, int), n, f"clamp_len must be an int, got {self.clamp_len!r}")
        for f in ("dropout", "dropatt"):
            _check(0.0 <= getattr(self, f) < 1.0, n, f"{f} must be in [0, 1), got {getattr(self, f)!r}")
        _check(self.attn_type in ("bi", "uni"), n, f"attn_type must be 'bi' or 'uni', got {self.attn_type!r}")
        _check(self.ff_activation in ("gelu", "relu", "gelu_new", "silu"), n,
               f"ff_activation must be one of gelu, relu, gelu_new, silu; got {self.ff_activation!r}")
        _check(not (self.same_length and self.attn_type != "uni"), n, "same_length only applies to attn_type 'uni'")
        _check(self.layer_norm_eps > 0, n, f"layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        _check(self.initializer_range > 0, n, f"initializer_range must be > 0, got {self.initializer_range!r}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def named(cls, size: str, **overrides: Any) -> "ModelConfig":
        """A standard size (``tiny``, ``small``, ``base``, ``large``), with field overrides."""
        if size not in NAMED_SIZES:
            raise ValueError(f"unknown model size {size!r}; choose one of {sorted(NAMED_SIZES)}")
        return cls(**{**NAMED_SIZES[size], **overrides})


NAMED_SIZES: dict[str, dict[str, Any]] = {
    # Unit tests: a forward pass in milliseconds.
    "tiny": dict(vocab_size=1000, d_model=32, n_layer=2, n_head=4, d_inner=64, mem_len=16, dropout=0.0, dropatt=0.0),
    # CPU research runs (bf16 on 2 cores): ~10M non-embedding parameters.
    "small": dict(vocab_size=8000, d_model=256, n_layer=6, n_head=4, d_inner=1024, mem_len=128),
    # XLNet-Base and XLNet-Large, as in the paper.
    "base": dict(vocab_size=32000, d_model=768, n_layer=12, n_head=12, d_inner=3072, mem_len=384, reuse_len=256),
    "large": dict(vocab_size=32000, d_model=1024, n_layer=24, n_head=16, d_inner=4096, mem_len=384, reuse_len=256),
}


# --- seq2seq fine-tuning (owner: seq2seq/generation engineer) ---------------------------------------------------------

SEQ2SEQ_ORDERS = ("uniform", "l2r", "r2l")


def parse_order_mix(spec: str) -> list[tuple[str, float]]:
    """``"uniform"`` or ``"l2r:0.5,uniform:0.5"`` -> [(order, probability)] (weights normalised to sum 1)."""
    items: list[tuple[str, float]] = []
    for part in str(spec).split(","):
        name, _, w = part.strip().partition(":")
        _user_check(name in SEQ2SEQ_ORDERS, "Seq2SeqConfig", f"order {name!r} in {spec!r} is not one of {', '.join(SEQ2SEQ_ORDERS)}")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            from plmgen.errors import UserError

            raise UserError(f"Seq2SeqConfig: weight {w!r} of order {name!r} in {spec!r} is not a number") from None
        _user_check(weight > 0, "Seq2SeqConfig", f"weight of order {name!r} in {spec!r} must be > 0")
        items.append((name, weight))
    total = sum(w for _, w in items)
    return [(n, w / total) for n, w in items]


@dataclasses.dataclass
class Seq2SeqConfig(YamlConfig):
    """Knobs of the seq2seq objective (layout ``[source <sep> target]``, see plmgen/objectives/seq2seq.py)."""

    order: str = "uniform"  # factorization orders of the target: uniform | l2r | r2l | a mix "l2r:0.5,uniform:0.5"
    predict_fraction: float = 1.0  # share of target tokens predicted per example (the earliest-ranked rest = context)
    # fixed: every example predicts ceil(predict_fraction·L) tokens; uniform: each example draws how many, uniformly
    # from 1..ceil(predict_fraction·L) (Mask-Predict's masking, so refinement sees every amount of context)
    predict_sampling: str = "fixed"
    length_weight: float = 0.1  # weight of the joint target-length loss (0 = no length head training)
    max_len: int = 128  # length classes 1..max_len of the length head (and the longest target kept in training)
    mass_weight: float = 0.0  # > 0: add the `mass` span objective on each side of the pairs (MASS-style joint)
    label_smoothing: float = 0.0  # of the target-token cross-entropy (0 = plain cross-entropy)
    length_offset: bool = False  # length head scores target length − source length (plmgen.length.LengthHead)
    # a </s> after the last target slot, seen by the target only: the query stream knows where the target ends
    # (without it nothing tells a slot how many follow, and left-to-right decoding stops mid-sentence)
    end_marker: bool = False

    def __post_init__(self) -> None:
        n = "Seq2SeqConfig"
        parse_order_mix(self.order)
        _user_check(0.0 < self.predict_fraction <= 1.0, n, f"predict_fraction must be in (0, 1], got {self.predict_fraction!r}")
        _user_check(self.predict_sampling in ("fixed", "uniform"), n,
                    f"predict_sampling must be fixed or uniform, got {self.predict_sampling!r}")
        _user_check(self.length_weight >= 0, n, f"length_weight must be >= 0, got {self.length_weight!r}")
        _user_check(isinstance(self.max_len, int) and self.max_len >= 1, n, f"max_len must be an int >= 1, got {self.max_len!r}")
        _user_check(self.mass_weight >= 0, n, f"mass_weight must be >= 0, got {self.mass_weight!r}")
        _user_check(0.0 <= self.label_smoothing < 1.0, n,
                    f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")


# --- data, training and the whole experiment (owner: training engineer) --------------------------------------------


def _user_check(cond: bool, cls: str, msg: str) -> None:
    """Like ``_check`` but raises UserError (a ValueError), so a bad YAML value or flag ends as one CLI line."""
    from plmgen.errors import UserError

    if not cond:
        raise UserError(f"{cls}: {msg}")


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
        _user_check(self.kind in ("pretrain", "parallel"), n, f"kind must be 'pretrain' or 'parallel', got {self.kind!r}")
        _user_check(isinstance(self.text_files, list), n, f"text_files must be a list of paths, got {self.text_files!r}")
        for f in ("seq_len", "batch_size"):
            _user_check(isinstance(getattr(self, f), int) and getattr(self, f) > 0, n, f"{f} must be a positive int, got {getattr(self, f)!r}")
        for f in ("val_batches", "num_workers", "max_src_len", "max_tgt_len", "max_pairs", "max_val_pairs",
                  "batch_tokens"):
            _user_check(isinstance(getattr(self, f), int) and getattr(self, f) >= 0, n, f"{f} must be an int >= 0, got {getattr(self, f)!r}")
        _user_check(0.0 <= self.nsp_true_ratio <= 1.0, n, f"nsp_true_ratio must be in [0, 1], got {self.nsp_true_ratio!r}")
        _user_check(self.kind == "parallel" or self.use_benchmark_text or bool(self.text_files), n,
                    "pretrain data needs use_benchmark_text: true or some text_files")


PRECISIONS = ("32", "bf16-mixed")


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
    precision: str = "32"  # "32" or "bf16-mixed" (CPU and GPU)
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: int | str = "auto"  # devices per node (DDP when > 1)
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_spawn | ... (Lightning strategy name)
    val_every: int = 200  # validate (and checkpoint) every this many training steps
    log_every: int = 10
    seed: int = 0
    progress_bar: bool = True

    def __post_init__(self) -> None:
        n = "TrainConfig"
        self.precision = str(self.precision)  # YAML reads `precision: 32` as an int
        for f in ("max_steps", "accumulate_grad_batches", "num_nodes", "val_every", "log_every"):
            _user_check(isinstance(getattr(self, f), int) and getattr(self, f) > 0, n, f"{f} must be a positive int, got {getattr(self, f)!r}")
        _user_check(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, n, f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        _user_check(self.lr > 0, n, f"lr must be > 0, got {self.lr!r}")
        _user_check(0.0 <= self.min_lr_ratio <= 1.0, n, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        _user_check(self.weight_decay >= 0, n, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        for f in ("adam_beta1", "adam_beta2"):
            _user_check(0.0 <= getattr(self, f) < 1.0, n, f"{f} must be in [0, 1), got {getattr(self, f)!r}")
        _user_check(self.adam_eps > 0, n, f"adam_eps must be > 0, got {self.adam_eps!r}")
        _user_check(self.grad_clip >= 0, n, f"grad_clip must be >= 0, got {self.grad_clip!r}")
        _user_check(self.precision in PRECISIONS, n, f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        _user_check(self.devices == "auto" or (isinstance(self.devices, int) and self.devices > 0), n,
                    f"devices must be 'auto' or a positive int, got {self.devices!r}")


@dataclasses.dataclass
class ExperimentConfig(YamlConfig):
    """One run: the YAML files under experiments/configs are this, and ``python cli.py train`` takes its fields
    as flags (``--model.mem_len 0 --train.max_steps 5``)."""

    name: str = "run"
    out_dir: str | None = None  # default runs/<name>
    tokenizer: str | None = None  # a sentencepiece .model to use; default: <out_dir>/tokenizer.model (trained if missing)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=lambda: ObjectiveConfig())  # noqa: F821
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        n = "ExperimentConfig"
        _user_check(isinstance(self.name, str) and self.name.strip() not in ("", ".", "..")
                    and not any(c in self.name for c in "/\\\0"), n,
                    f"name must be one folder name (no '/', not '.' or '..'), got {self.name!r}")
        m, d = self.model, self.data
        if d.kind == "pretrain":
            functional = 3 if d.ab_layout else 0  # <sep> <sep> <cls>
            _user_check(m.reuse_len + functional + 2 <= d.seq_len, n,
                        f"data.seq_len ({d.seq_len}) must exceed model.reuse_len ({m.reuse_len}) + {functional + 1}")
        _user_check(not m.bi_data or d.batch_size % 2 == 0, n,
                    f"model.bi_data needs an even data.batch_size (forward + backward halves), got {d.batch_size}")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs") / self.name


# --- pre-training objectives (owner: objectives engineer) -----------------------------------------------------------

OBJECTIVE_NAMES = ("plm", "dae", "mask-plm", "mass", "joint", "seq2seq", "prefix-lm")


def parse_mixture(spec: str) -> list[tuple[str, float]]:
    """``"plm:1,mass:0.5"`` -> [("plm", 1.0), ("mass", 0.5)]: the sub-objectives of ``joint`` and their loss weights.

    A bare name means weight 1. Raises UserError naming ``objective.mixture`` and the bad part.
    """
    from plmgen.errors import UserError

    choices = ", ".join(n for n in OBJECTIVE_NAMES if n != "joint")
    items: list[tuple[str, float]] = []
    for part in str(spec).split(","):
        name, colon, w = (s.strip() for s in part.partition(":"))
        bad = f"objective.mixture: bad part {part.strip()!r} in {spec!r}"
        if name not in OBJECTIVE_NAMES or name == "joint":
            raise UserError(f"{bad}: objective must be one of {choices}")
        try:
            weight = float(w) if colon else 1.0
        except ValueError:
            raise UserError(f"{bad}: weight {w!r} is not a number (expected NAME:WEIGHT)") from None
        if not weight > 0 or weight == float("inf"):
            raise UserError(f"{bad}: weight must be a finite number > 0")
        if name in (n for n, _ in items):
            raise UserError(f"{bad}: {name!r} is listed twice")
        items.append((name, weight))
    return items


@dataclasses.dataclass
class ObjectiveConfig(YamlConfig):
    """Which pre-training objective and its knobs (plmgen/objectives/; names follow the XLNet reference)."""

    name: str = "plm"  # plm | dae | mask-plm | mass | joint | seq2seq | prefix-lm
    # plm / mask-plm: which tokens are predicted and in which order
    K: float = 6.0  # predict ~1/K of the (non-functional) tokens: the last 1/K of the factorization order
    num_predict: int | None = None  # fixed count of predicted tokens per sequence instead of 1/K
    perm_size: int = 0  # local permutation in blocks of this many positions (0 or >= seq_len = the whole part)
    span: bool = True  # span-based prediction (n-grams); False = independent single tokens
    max_gram: int = 5  # longest predicted n-gram, p(n) ∝ 1/n
    mask_alpha: int = 6  # ~mask_beta predicted tokens per mask_alpha context tokens
    mask_beta: int = 1
    # dae (BERT-style masked LM)
    dae_prob: float = 0.15  # share of tokens predicted
    dae_mask_frac: float = 0.8  # of those: replaced by <mask> ...
    dae_random_frac: float = 0.1  # ... by a random token (the rest keep their token)
    # mass
    mass_ratio: float = 0.5  # length of the one predicted span, as a share of the non-functional tokens
    mass_order: Literal["l2r", "random"] = "l2r"  # order the query stream predicts the span in
    # joint
    mixture: str = "plm:1,mass:1"  # sub-objectives and loss weights
    # next-sentence prediction head on <cls> (0 = off)
    nsp_weight: float = 0.0
    # seq2seq fine-tuning knobs (plmgen/objectives/seq2seq.py; prefix-lm reads max_len only)
    seq2seq: Seq2SeqConfig = dataclasses.field(default_factory=Seq2SeqConfig)

    def __post_init__(self) -> None:
        n = "ObjectiveConfig"
        _user_check(self.name in OBJECTIVE_NAMES, n,
                    f"unknown objective name {self.name!r}; choose one of {', '.join(OBJECTIVE_NAMES)}")
        _user_check(isinstance(self.K, (int, float)) and self.K >= 1, n, f"K must be a number >= 1, got {self.K!r}")
        _user_check(self.num_predict is None or (isinstance(self.num_predict, int) and self.num_predict > 0), n,
                    f"num_predict must be a positive int or null, got {self.num_predict!r}")
        for f in ("perm_size",):
            _user_check(isinstance(getattr(self, f), int) and getattr(self, f) >= 0, n, f"{f} must be an int >= 0, got {getattr(self, f)!r}")
        for f in ("max_gram", "mask_alpha", "mask_beta"):
            _user_check(isinstance(getattr(self, f), int) and getattr(self, f) > 0, n, f"{f} must be a positive int, got {getattr(self, f)!r}")
        _user_check(isinstance(self.span, bool), n, f"span must be true or false, got {self.span!r}")
        _user_check(0.0 < self.dae_prob <= 1.0, n, f"dae_prob must be in (0, 1], got {self.dae_prob!r}")
        _user_check(self.dae_mask_frac >= 0 and self.dae_random_frac >= 0 and self.dae_mask_frac + self.dae_random_frac <= 1.0,
                    n, f"dae_mask_frac and dae_random_frac must be >= 0 with a sum <= 1, got {self.dae_mask_frac!r}, {self.dae_random_frac!r}")
        _user_check(0.0 < self.mass_ratio <= 1.0, n, f"mass_ratio must be in (0, 1], got {self.mass_ratio!r}")
        _user_check(self.mass_order in ("l2r", "random"), n, f"mass_order must be 'l2r' or 'random', got {self.mass_order!r}")
        _user_check(self.nsp_weight >= 0, n, f"nsp_weight must be >= 0, got {self.nsp_weight!r}")
        parse_mixture(self.mixture)
        if isinstance(self.seq2seq, dict):  # YAML / jsonargparse may hand the nested config over as a mapping
            self.seq2seq = Seq2SeqConfig.from_dict(self.seq2seq)


# --- decoding (owner: decoding engineer) -------------------------------------------------------------------------


@dataclasses.dataclass
class DecodeConfig(YamlConfig):
    """Any-order query-stream decoding (``plmgen.decoding.decode``).

    order: a name from ``plmgen.decoding.orders.ORDERS`` (l2r, r2l, random, middle-out, balanced-tree, confidence,
    entropy, margin, parallel, threshold). beam > 1: beam search over (position, token) pairs. sample: ancestral
    sampling with temperature / top_k (0 = off) / top_p (1 = off); temperature 0 = greedy. k_per_step: positions
    filled per step; threshold: fill every open position with max-probability above it (adaptive orders).
    refine_iters: mask-predict refinement iterations after the fill. max_len: longest target allowed.
    max_segment: context tokens (source + <sep>) in the final segment; earlier ones go through memory.
    bf16: bfloat16 autocast. backend: "cache" (incremental, exact) or "recompute" (naive reference).
    speculate: k > 0 drafts k (position, token) pairs per pass and verifies them in the next pass
    (``decoding.speculative``): greedy output identical to speculate 0, sampling distributed identically.
    """

    order: str = "l2r"
    beam: int = 1
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    k_per_step: int = 1
    threshold: float | None = None
    refine_iters: int = 0
    seed: int = 0
    max_len: int = 256
    max_segment: int = 512
    bf16: bool = False
    backend: Literal["cache", "recompute"] = "cache"
    speculate: int = 0

    def __post_init__(self) -> None:
        from plmgen.decoding.orders import ORDERS

        n = "DecodeConfig"
        _user_check(self.order in ORDERS, n, f"order {self.order!r} is unknown; choose one of {', '.join(ORDERS)}")
        for f in ("beam", "k_per_step", "max_len", "max_segment"):
            _user_check(isinstance(getattr(self, f), int) and getattr(self, f) >= 1, n, f"{f} must be an int >= 1, got {getattr(self, f)!r}")
        for f in ("top_k", "refine_iters", "seed"):
            _user_check(isinstance(getattr(self, f), int) and getattr(self, f) >= 0, n, f"{f} must be an int >= 0, got {getattr(self, f)!r}")
        _user_check(self.temperature >= 0, n, f"temperature must be >= 0, got {self.temperature!r}")
        _user_check(0.0 < self.top_p <= 1.0, n, f"top_p must be in (0, 1], got {self.top_p!r}")
        _user_check(self.threshold is None or 0.0 < self.threshold < 1.0, n, f"threshold must be in (0, 1), got {self.threshold!r}")
        _user_check(self.threshold is None or ORDERS[self.order].adaptive, n,
                    f"threshold needs an adaptive order (confidence, entropy, margin, threshold), not {self.order!r}")
        _user_check(self.beam == 1 or not self.sample, n, "beam > 1 cannot be combined with sample")
        _user_check(self.beam == 1 or (self.k_per_step == 1 and self.threshold is None and self.order != "threshold"), n,
                    "beam > 1 fills one position per step: use k_per_step 1 and no threshold")
        _user_check(self.backend in ("cache", "recompute"), n, f"backend must be 'cache' or 'recompute', got {self.backend!r}")
        _user_check(isinstance(self.speculate, int) and self.speculate >= 0, n, f"speculate must be an int >= 0, got {self.speculate!r}")
        _user_check(not self.speculate or self.beam == 1, n, "speculate drafts for greedy and sampling decoding; beam search stays sequential (use speculate 0 with beam > 1)")
        _user_check(not self.speculate or (self.k_per_step == 1 and self.threshold is None and self.order != "threshold"), n,
                    "speculate verifies one-position-per-step decoding: use k_per_step 1 and no threshold")


@dataclasses.dataclass
class TranslateConfig(YamlConfig):
    """A translation run (``plmgen.decoding.translate``): how to decode, how to choose each target length, how many
    sources per batch. length: ``predict`` (length head), ``oracle`` (reference length) or a fixed N; length_beam:
    with ``predict``, decode the top-K lengths and keep the best length-normalised log-probability."""

    decode: DecodeConfig = dataclasses.field(default_factory=DecodeConfig)
    length: str = "predict"
    length_beam: int = 1
    batch_size: int = 32

    def __post_init__(self) -> None:
        from plmgen.length import parse_length_mode

        n = "TranslateConfig"
        parse_length_mode(self.length)
        for f in ("length_beam", "batch_size"):
            _user_check(isinstance(getattr(self, f), int) and getattr(self, f) >= 1, n, f"{f} must be an int >= 1, got {getattr(self, f)!r}")
