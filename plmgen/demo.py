"""The README demo.

``full`` (default), offline on 2 CPU cores in about 14–16 minutes (machine-dependent, see experiments/results/demo/):
prepare lo-de-en (Debian's LibreOffice help) → tokenizer → short XLNet pre-training (DAE) → seq2seq fine-tuning →
generation with several orders → sacrebleu BLEU/chrF table. A training stage is reused only if it finished
(``complete.json`` in its run folder); an unfinished one resumes exactly from its last checkpoint, or starts again
without one; ``--force`` retrains.

``backbone``: build or load an XLNet, round-trip it through the HF format, and run a two-stream forward along a
random factorization order, printing each prediction and what it could see.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from .config import ModelConfig
from .errors import UserError
from .hf import load_hf_xlnet, save_hf_xlnet
from .masks import ranks_from_order, stream_masks
from .model import XLNet


CONFIGS = Path(__file__).parent / "configs"  # package data (in the source tree: links into experiments/configs)


def demo(stage: str = "full", out: str | None = None, src: str = "de", tgt: str = "en", data: str | None = None,
         pretrain_steps: int | None = None, finetune_steps: int | None = None,
         orders: str = "l2r,l2r+beam4,r2l,confidence,confidence@d1,balanced-tree,parallel@2",
         limit: int = 0, hf_checkpoint: str | None = None, length: int = 12, num_predict: int = 4,
         seed: int = 0, force: bool = False, threads: int | None = None) -> None:
    """Run the README demo.

    Args:
        stage: full (prepare → pre-train → fine-tune → generate → BLEU) or backbone (a quick backbone tour).
        out: folder for the demo's runs, hypotheses, table and plots (default runs/demo, or runs/demo-<src>-<tgt>
            for other pairs, so pairs never share checkpoints).
        src: source language of the LibreOffice help pair (any language Debian ships help for, e.g. fr, es, ja).
        tgt: target language (en = en-us).
        data: where the pair is prepared (default data/lo-de-en, or data/lo-<src>-<tgt> for other pairs).
        pretrain_steps: override the pre-training steps of demo-pretrain.yaml (plmgen/configs).
        finetune_steps: override the fine-tuning steps of demo-finetune.yaml (plmgen/configs).
        orders: decoding orders to compare (comma-separated order specs, see `cli.py generate --help`).
        limit: translate the first N test sentences (0 = all).
        hf_checkpoint: backbone stage: a Hugging Face XLNet checkpoint directory (default: a random small XLNet).
        length: backbone stage: sequence length of the random input.
        num_predict: backbone stage: positions the query stream predicts.
        seed: random seed.
        force: retrain the pre-training and fine-tuning stages even if they finished (the prepared data is kept).
        threads: torch CPU threads (default: one per usable core; try 1 when other jobs keep the cores busy).
    """
    from .threads import setup_threads

    setup_threads(threads)
    if stage == "backbone":
        return backbone_demo(hf_checkpoint, length, num_predict, seed)
    if stage != "full":
        raise UserError(f"--stage must be full or backbone, got {stage!r}")
    if out is None:
        out = "runs/demo" if (src, tgt) == ("de", "en") else f"runs/demo-{src}-{tgt}"
    return full_demo(Path(out), src, tgt, data, pretrain_steps, finetune_steps, orders, limit, seed, force)


def full_demo(out: Path, src: str, tgt: str, data: str | None, pretrain_steps: int | None, finetune_steps: int | None,
              orders: str, limit: int, seed: int, force: bool = False) -> None:
    import dataclasses

    from .config import ExperimentConfig
    from .data.prepare import prepare
    from .decoding.generate import generate
    from .stages import processes, train_in_child, train_stage
    from .train import run_training

    console = Console()  # each stage says its thread count (run_training, generate)
    console.rule(f"1/4 prepare LibreOffice help {src}→{tgt}")
    data = str(prepare("lo-de-en", out=data, src=src, tgt=tgt))

    def stage(title: str, config: str, run_dir: Path, steps: int | None, init_from: Path | None = None) -> Path:
        console.rule(title)
        cfg = ExperimentConfig.from_yaml(CONFIGS / config)
        train = cfg.train if steps is None else dataclasses.replace(cfg.train, max_steps=steps)
        cfg = dataclasses.replace(cfg, out_dir=str(run_dir), data=dataclasses.replace(cfg.data, path=data),
                                  train=dataclasses.replace(train, seed=seed))
        init = str(init_from) if init_from else None
        if processes(cfg.train) > 1:  # DDP: the ranks run `cli.py train` (see train_in_child)
            run = lambda resume: train_in_child(cfg, resume, init)  # noqa: E731
        else:
            run = lambda resume: run_training(cfg, resume=resume, init_from=None if resume else init)  # noqa: E731
        return train_stage(run_dir, run, cfg.train.max_steps, force=force, say=console.print)

    pre = stage("2/4 tokenizer + XLNet pre-training (DAE)", "demo-pretrain.yaml", out / "pretrain",
                pretrain_steps)
    ft = stage("3/4 seq2seq fine-tuning (query stream, any order, length head)", "demo-finetune.yaml",
               out / "finetune", finetune_steps, init_from=pre)
    console.rule("4/4 generate with several orders → sacrebleu BLEU / chrF")
    # One process per core, one thread each: a decoding step is too small for two cores (~18 % faster here).
    workers = 1 if torch.cuda.is_available() else max(1, min(torch.get_num_threads(), len(orders.split(","))))
    generate(checkpoint=str(ft), split="test", data=data, orders=orders, lengths="predict", out=str(out / "orders"),
             evaluate=True, limit=limit, precision="bf16", seed=seed, workers=workers)


def backbone_demo(hf_checkpoint: str | None = None, length: int = 12, num_predict: int = 4, seed: int = 0) -> None:
    """The backbone tour.

    Args:
        hf_checkpoint: a Hugging Face XLNet checkpoint directory to load (default: a random small XLNet).
        length: sequence length of the random input.
        num_predict: how many positions the query stream predicts (the last ones of a random order).
        seed: random seed.
    """
    console = Console()
    torch.manual_seed(seed)
    model = load_hf_xlnet(hf_checkpoint) if hf_checkpoint else XLNet(ModelConfig.named("small", vocab_size=1000))
    with tempfile.TemporaryDirectory() as d:  # HF export -> import round trip must be lossless
        save_hf_xlnet(model, d)
        back = load_hf_xlnet(d)
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    console.print(f"HF export/import round trip lossless: {same}")
    model.eval()

    ids = torch.randint(10, model.cfg.vocab_size, (1, length))
    order = torch.randperm(length)[None, -num_predict:]  # predict the last num_predict of a random order
    rank = ranks_from_order(order, length)
    sm = stream_masks(rank)
    with torch.no_grad():
        out = model(ids, content_mask=sm.content, query_mask=sm.query, target_pos=sm.target_pos)
        probs = model.logits(out.g).softmax(-1)[0]
    table = Table(title="query-stream predictions along a random factorization order")
    for col in ("step", "position", "true id", "predicted id", "p(pred)", "p(true)", "sees positions"):
        table.add_column(col)
    for p in range(num_predict):
        pos = int(sm.target_pos[0, p])
        seen = [j for j in range(length) if sm.query[0, p, j]]
        pred = int(probs[p].argmax())
        table.add_row(str(p), str(pos), str(int(ids[0, pos])), str(pred), f"{probs[p, pred]:.4f}",
                      f"{probs[p, ids[0, pos]]:.4f}", " ".join(map(str, seen)))
    console.print(table)
