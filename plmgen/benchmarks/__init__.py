"""Benchmarks printing ratios against a reference measured in the same run: ``python cli.py bench WHAT``.

Each benchmark is ``plmgen/benchmarks/<what>.py`` with a ``run(...)`` function.
"""

from __future__ import annotations

import importlib

from ..errors import UserError

BENCHMARKS = ("backbone", "train", "decode")


def bench(what: str, steps: int | None = None, batch: int | None = None, checkpoint: str | None = None) -> None:
    """Run one benchmark.

    Args:
        what: which benchmark (backbone, train, decode).
        steps: timed steps (None = the benchmark's default; 3 for a quick smoke run).
        batch: batch size (None = the benchmark's default).
        checkpoint: decode only: a fine-tuned seq2seq checkpoint for BLEU of parallel decoding on a dev slice.
    """
    if what not in BENCHMARKS:
        raise UserError(f"unknown benchmark {what!r}; choose one of {', '.join(BENCHMARKS)}")
    if checkpoint and what != "decode":
        raise UserError("--checkpoint goes with `bench decode` only")
    kwargs = {k: v for k, v in dict(steps=steps, batch=batch, checkpoint=checkpoint).items() if v is not None}
    importlib.import_module(f"{__name__}.{what}").run(**kwargs)
