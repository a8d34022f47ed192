"""The training-ablation table: which pre-training makes any-order query-stream generation work?

    python experiments/run_ablations.py --data data/lo-de-en --out runs/ablations

Every variant runs the same recipe as the README demo, changing only the pre-training: pre-train
(``experiments/configs/demo-pretrain.yaml`` + the variant's overrides) → seq2seq fine-tuning (``demo-finetune.yaml``,
the same steps for every variant) → decode the test split with a few orders → sacrebleu BLEU/chrF. ``scratch``
skips pre-training (the fine-tuning starts from random weights). Stages whose checkpoints exist are reused, so an
interrupted study continues where it stopped.

Writes ``<out>/ablations.md`` (variant × order: BLEU / chrF, with the pre-training and fine-tuning validation
losses and the sacrebleu signature) and copies it to ``experiments/results/ablations/`` unless ``--record false``.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"

# name -> dotted overrides of demo-pretrain.yaml (None: no pre-training). The XLNet paper's ablation rows, plus the
# alternatives this toolkit studies ([MASK]-placeholder PLM, MASS, PLM + MASS).
VARIANTS: dict[str, dict | None] = {
    "scratch": None,
    "plm": {},
    "plm-no-memory": {"model.mem_len": 0, "model.reuse_len": 0},
    "plm-no-span": {"objective.span": False},
    "dae": {"objective.name": "dae"},
    "mask-plm": {"objective.name": "mask-plm"},
    "mass": {"objective.name": "mass"},
    "plm+mass": {"objective.name": "joint", "objective.mixture": "plm:1,mass:1"},
}


def override(cfg, dotted: dict):
    """A copy of an ExperimentConfig with ``{"model.mem_len": 0, ...}`` applied (validated again on the way)."""
    d = cfg.to_dict()
    for key, value in dotted.items():
        node, *path, leaf = key.split(".")
        target = d[node]
        for part in path:
            target = target[part]
        if leaf not in target:
            raise KeyError(f"unknown config key {key!r}")
        target[leaf] = value
    return type(cfg).from_dict(d)


def last_val_loss(run_dir: Path) -> float | None:
    """The last logged ``val/loss`` of a run (CSV logger), or None."""
    files = sorted((run_dir / "logs" / "csv").glob("version_*/metrics.csv"))
    rows = [r for f in files for r in csv.DictReader(open(f, encoding="utf-8")) if r.get("val/loss")]
    return float(rows[-1]["val/loss"]) if rows else None


def run_ablations(data: str = "data/lo-de-en", out: str = "runs/ablations", variants: str = ",".join(VARIANTS),
                  pretrain_steps: int | None = None, finetune_steps: int | None = None, orders: str = "l2r,confidence",
                  limit: int = 0, seed: int = 0, record: bool = True) -> Path:
    """Pre-train each variant, fine-tune it, decode with ``orders`` and write the table; returns its path.

    Args:
        data: prepared lo-de-en folder (``python cli.py prepare lo-de-en --out DATA``).
        out: folder for the runs and the table.
        variants: comma-separated names from VARIANTS (scratch, plm, plm-no-memory, plm-no-span, dae, mask-plm,
            mass, plm+mass).
        pretrain_steps: override demo-pretrain.yaml's steps.
        finetune_steps: override demo-finetune.yaml's steps.
        orders: decoding orders compared (any ``generate --orders`` spec).
        limit: first N test sentences only (0 = all).
        seed: training and decoding seed.
        record: also copy the table to experiments/results/ablations/.
    """
    import dataclasses

    from plmgen.config import ExperimentConfig, atomic_write_text
    from plmgen.decoding.generate import generate, read_inputs
    from plmgen.errors import UserError
    from plmgen.evaluation import score
    from plmgen.train import run_training

    names = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise UserError(f"--variants: unknown {unknown or names}; choose from {', '.join(VARIANTS)}")
    if not (Path(data) / "manifest.json").is_file():
        raise UserError(f"--data {data}: not a prepared folder; run `python cli.py prepare lo-de-en --out {data}`")
    root = Path(out)

    def train(config: str, run_dir: Path, steps: int | None, dotted: dict, init_from: Path | None) -> Path:
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.exists():
            return last
        cfg = override(ExperimentConfig.from_yaml(CONFIGS / config), dotted)
        t = cfg.train if steps is None else dataclasses.replace(cfg.train, max_steps=steps)
        cfg = dataclasses.replace(cfg, name=run_dir.name, out_dir=str(run_dir), train=dataclasses.replace(t, seed=seed),
                                  data=dataclasses.replace(cfg.data, path=data))
        run_training(cfg, init_from=str(init_from) if init_from else None)
        return last

    _, refs, _ = read_inputs(None, "test", data, None, None, limit)  # the same references for every variant
    rows, sig = [], ""
    for name in names:
        dotted = VARIANTS[name]
        pre = None
        if dotted is not None:
            pre = train("demo-pretrain.yaml", root / name / "pretrain", pretrain_steps, dotted, None)
        ft = train("demo-finetune.yaml", root / name / "finetune", finetune_steps, {}, pre)
        runs = generate(checkpoint=str(ft), split="test", data=data, orders=orders, lengths="predict",
                        out=str(root / name / "orders"), limit=limit, precision="bf16", seed=seed, quiet=True)
        scores = [score(r.hyps, refs) for r in runs]
        sig = scores[0].bleu_signature
        pre_loss = last_val_loss(root / name / "pretrain") if pre else None
        rows.append((name, pre_loss, last_val_loss(root / name / "finetune"), scores))
        print(f"{name}: " + "  ".join(f"{r.order} {s.bleu:.2f}" for r, s in zip(runs, scores)), flush=True)

    order_names = [r.order for r in runs]
    md = ["# Which pre-training makes any-order generation work? (`experiments/run_ablations.py`)", "",
          f"lo-de-en test split{f' (first {limit} sentences)' if limit else ''}, target length from the length head, "
          "bf16 decoding. Pre-training: `demo-pretrain.yaml` + the variant's change; fine-tuning: `demo-finetune.yaml` "
          "for every variant. Cells: BLEU / chrF.", "",
          "| variant | pre-train change | pre-train val loss | fine-tune val loss | "
          + " | ".join(order_names) + " |",
          "|---|---|---|---|" + "---|" * len(order_names)]
    for name, pre_loss, ft_loss, scores in rows:
        change = "none (random init)" if VARIANTS[name] is None else (
            ", ".join(f"`{k} {v}`" for k, v in VARIANTS[name].items()) or "the demo's PLM")
        cells = " | ".join(f"{s.bleu:.2f} / {s.chrf:.2f}" for s in scores)
        fmt = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
        md.append(f"| {name} | {change} | {fmt(pre_loss)} | {fmt(ft_loss)} | {cells} |")
    md += ["", f"BLEU signature: `{sig}`", "",
           "Pre-training losses of different objectives measure different tasks; compare the BLEU columns.", ""]
    table = root / "ablations.md"
    atomic_write_text(table, "\n".join(md))
    if record:
        dest = ROOT / "experiments" / "results" / "ablations"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(table, dest / "ablations.md")
    print(f"wrote {table}")
    return table


if __name__ == "__main__":
    from plmgen.errors import run_cli

    sys.exit(run_cli(run_ablations, as_positional=False))
