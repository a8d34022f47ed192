"""The research table: BLEU per decoding order × target-length mode for one fine-tuned seq2seq checkpoint.

    python experiments/run_orders.py --checkpoint runs/finetune-small-cpu/checkpoints/last.ckpt --split test

Writes experiments/results/orders/<run>/{orders.md, order_heatmap.png, bleu_vs_steps.png, <order>.<length>.txt,
<order>.<length>.trace.jsonl}; every BLEU is sacrebleu on detokenized text, the signature is under the table.
A thin wrapper around ``python cli.py generate --orders ... --lengths ...`` with the study's defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ORDERS = ("l2r,r2l,random,middle-out,balanced-tree,confidence,entropy,margin,confidence@w2,entropy@w2,"
          "parallel@2,parallel@4,threshold@0.9")
LENGTHS = "predict,oracle"


def run_orders(checkpoint: str, split: str = "test", data: str | None = None, orders: str = ORDERS, lengths: str = LENGTHS,
               length_beam: int = 1, limit: int = 0, out: str | None = None, batch_size: int = 32,
               precision: str = "fp32", quiet: bool = False) -> Path:
    """Decode ``split`` with every order × length mode; returns the results folder.

    Args:
        checkpoint: fine-tuned seq2seq checkpoint.
        split: data split to translate (references come with it).
        data: prepared data folder (default: the one the checkpoint was trained on).
        orders: comma-separated order specs (NAME, NAME@K positions per step, NAME@P threshold, NAME@wW window).
        lengths: comma-separated length modes (predict, oracle, N).
        length_beam: top-K predicted lengths decoded per source in the predict mode.
        limit: first N sentences only (0 = all).
        out: results folder (default experiments/results/orders/<run name>).
        batch_size: sources decoded together.
        precision: 32 or bf16.
        quiet: no progress bars.
    """
    from plmgen.decoding.generate import generate

    run = Path(checkpoint).resolve().parent.parent.name
    folder = Path(out) if out else Path(__file__).resolve().parent / "results" / "orders" / run
    generate(checkpoint=checkpoint, split=split, data=data, orders=orders, lengths=lengths, length_beam=length_beam, limit=limit,
             out=str(folder), batch_size=batch_size, precision=precision, quiet=quiet)
    return folder


if __name__ == "__main__":
    from plmgen.errors import run_cli

    sys.exit(run_cli(run_orders, as_positional=False))
