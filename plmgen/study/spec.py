"""A study spec (``experiments/studies/*.yaml``): variants × seeds × fine-tuning budgets, and how each run is configured.

    name: anyorder-vs-ar
    data: data/lo-de-en              # prepared folder (the CLI's --data overrides it)
    split: test                      # split decoded and scored; limit: first N sentences (0 = all)
    seeds: [0, 1, 2]                 # every run (pre-training, fine-tuning, decoding) of a variant per seed
    orders: [l2r, confidence]        # decoding orders (a variant may name its own)
    baseline: {variant: l2r-only, order: l2r}   # the row the paired tests compare against (or a list of rows)
    significance: {bs: 1000, ar: 10000}          # sacrebleu paired bootstrap samples / approximate-randomization trials
    pretrain: {config: demo-pretrain.yaml, steps: 1500, compute_matched: plm}
    finetune: {config: demo-finetune.yaml, budgets: [1000, 2000, 4000]}
    variants:
      l2r-only: {finetune: {objective.seq2seq.order: l2r}}
      scratch:  {pretrain_config: none}
      dae:      {pretrain: {objective.name: dae}}

A variant may set ``pretrain_config`` (a file in experiments/configs, a path, or ``none``: no pre-training),
``pretrain`` (dotted overrides), ``pretrain_steps``, ``finetune_config``, ``finetune`` (dotted overrides),
``budgets``, ``orders`` and ``lengths``. Fine-tuning runs ``max(budgets)`` steps (one LR schedule) and is evaluated
from the checkpoints saved at every budget. ``compute_matched: V`` gives every pre-training the FLOPs of
``steps`` steps of variant V (steps = steps·FLOPs(V)/FLOPs(variant), FLOPs per step measured).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from plmgen.config import ExperimentConfig, parse_precision
from plmgen.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "experiments" / "configs"
PROCESS_KEYS = ("train.devices", "train.strategy", "train.num_nodes")  # the runner sets these
VARIANT_KEYS = ("pretrain_config", "pretrain", "pretrain_steps", "finetune_config", "finetune", "budgets", "orders",
                "lengths", "note")


@dataclasses.dataclass
class Variant:
    name: str
    pretrain_config: str | None  # None: no pre-training (random init)
    pretrain: dict[str, Any]
    pretrain_steps: int | None
    finetune_config: str
    finetune: dict[str, Any]
    budgets: list[int]
    orders: list[str]
    lengths: str
    note: str = ""


@dataclasses.dataclass
class StudySpec:
    name: str
    data: str
    split: str
    limit: int
    seeds: list[int]
    baselines: list[tuple[str, str]]  # (variant, order) rows the paired tests compare against; the first is primary
    bs: int
    ar: int
    pretrain_steps: int
    compute_matched: str | None
    variants: list[Variant]
    precision: str = "bf16"  # decoding precision
    path: str = ""

    @property
    def baseline(self) -> tuple[str, str]:
        return self.baselines[0]

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise UserError(f"{where}: {msg}")


def _int_list(value, where: str) -> list[int]:
    ok = isinstance(value, list) and value and all(isinstance(x, int) and x > 0 for x in value)
    _need(bool(ok), where, f"expected a non-empty list of positive ints, got {value!r}")
    return sorted(set(value))


def _str_list(value, where: str) -> list[str]:
    value = value.split(",") if isinstance(value, str) else value
    _need(isinstance(value, list) and bool(value), where, f"expected a list of names, got {value!r}")
    return [str(v).strip() for v in value]


def load_spec(path: str | Path, data: str | None = None) -> StudySpec:
    """Read and validate a study spec; every variant's configs are resolved once here, so a bad key fails at once."""
    path = Path(path)
    _need(path.is_file(), "--spec", f"{path} not found")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    w = str(path)
    known = {"name", "data", "split", "limit", "seeds", "orders", "lengths", "baseline", "significance", "pretrain",
             "finetune", "variants", "precision"}
    _need(isinstance(d, dict) and not set(d) - known, w, f"unknown keys {sorted(set(d) - known)}; known: {sorted(known)}")
    pre, ft = d.get("pretrain") or {}, d.get("finetune") or {}
    orders, lengths = _str_list(d.get("orders", ["l2r"]), f"{w}: orders"), str(d.get("lengths", "predict"))
    budgets = _int_list(ft.get("budgets"), f"{w}: finetune.budgets")
    variants = []
    _need(isinstance(d.get("variants"), dict) and bool(d["variants"]), w, "variants: expected a mapping name -> settings")
    for name, v in d["variants"].items():
        v = v or {}
        where = f"{w}: variants.{name}"
        _need(isinstance(v, dict) and not set(v) - set(VARIANT_KEYS), where, f"unknown keys; known: {list(VARIANT_KEYS)}")
        pc = v.get("pretrain_config", pre.get("config", "none"))
        variants.append(Variant(
            name=str(name), pretrain_config=None if pc in (None, "none") else str(pc), pretrain=dict(v.get("pretrain") or {}),
            pretrain_steps=v.get("pretrain_steps"), finetune_config=str(v.get("finetune_config", ft.get("config", ""))),
            finetune=dict(v.get("finetune") or {}), budgets=_int_list(v.get("budgets", budgets), f"{where}.budgets"),
            orders=_str_list(v.get("orders", orders), f"{where}.orders"), lengths=str(v.get("lengths", lengths)),
            note=str(v.get("note", ""))))
    base = d.get("baseline") or {}
    base = base if isinstance(base, list) else [base]
    _need(all(isinstance(b, dict) for b in base), w, "baseline: expected {variant: V, order: O} or a list of them")
    sig = d.get("significance") or {}
    spec = StudySpec(
        name=str(d.get("name") or path.stem), data=str(data or d.get("data", "data/lo-de-en")), split=str(d.get("split", "test")),
        limit=int(d.get("limit", 0)), seeds=sorted(set(d.get("seeds", [0]))), baselines=[(str(b.get("variant")), str(b.get("order", "l2r"))) for b in base],
        bs=int(sig.get("bs", 1000)), ar=int(sig.get("ar", 10000)), pretrain_steps=int(pre.get("steps", 0)),
        compute_matched=pre.get("compute_matched"), variants=variants, precision=parse_precision(d.get("precision", "bf16"), f"{w}: precision"), path=w)
    _validate(spec)
    return spec


def _validate(spec: StudySpec) -> None:
    w = spec.path
    names = [v.name for v in spec.variants]
    for bv, bo in spec.baselines:
        _need(bv in names, w, f"baseline.variant {bv!r} is not a variant ({', '.join(names)})")
        _need(bo in spec.variant(bv).orders, w, f"baseline.order {bo!r} is not an order of variant {bv!r}")
    _need(spec.compute_matched is None or spec.compute_matched in names, w,
          f"pretrain.compute_matched {spec.compute_matched!r} is not a variant")
    _need(all(isinstance(s, int) for s in spec.seeds), w, f"seeds must be ints, got {spec.seeds!r}")
    for v in spec.variants:
        if v.pretrain_config is not None:
            _need(bool(v.pretrain_steps or spec.pretrain_steps), w, f"variants.{v.name}: no pre-training steps")
        _need(bool(v.finetune_config), w, f"variants.{v.name}: no finetune config")
        multi = sorted(k for k in (*v.pretrain, *v.finetune) if k in PROCESS_KEYS)
        _need(not multi, w, f"variants.{v.name}: sets {', '.join(multi)}; a study trains one process per cell "
                            "(run more workers instead)")


def config_path(name: str) -> Path:
    """A config named by file name (experiments/configs/NAME) or by path."""
    p = Path(name)
    for cand in (p, CONFIGS / p, CONFIGS / f"{name}.yaml"):
        if cand.is_file():
            return cand
    raise UserError(f"config {name!r} not found (looked in {CONFIGS})")


def override(cfg: ExperimentConfig, dotted: dict) -> ExperimentConfig:
    """A copy of an ExperimentConfig with ``{"model.mem_len": 0, ...}`` applied (validated again on the way)."""
    d = cfg.to_dict()
    for key, value in dotted.items():
        node, *path, leaf = key.split(".")
        target = d.get(node)
        for part in path:
            target = target.get(part) if isinstance(target, dict) else None
        if not isinstance(target, dict) or leaf not in target:
            raise KeyError(f"unknown config key {key!r}")
        target[leaf] = value
    return type(cfg).from_dict(d)


def resolve(config: str, dotted: dict, **train) -> ExperimentConfig:
    """Load a named config, apply the variant's overrides and the study's train fields (``max_steps``, ``seed``)."""
    try:
        cfg = override(ExperimentConfig.from_yaml(config_path(config)), dotted)
    except KeyError as e:
        raise UserError(f"config {config}: {e.args[0]}") from None
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))
