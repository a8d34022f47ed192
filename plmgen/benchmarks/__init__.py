"""Benchmarks printing ratios against a reference measured in the same run: ``python cli.py bench WHAT``.

Each benchmark is ``plmgen/benchmarks/<what>.py`` with a ``run(...)`` function.
"""

from __future__ import annotations

import importlib
import inspect

from ..errors import UserError

BENCHMARKS = ("backbone", "train", "decode")


def bench(what: str, steps: int | None = None, batch: int | None = None, checkpoint: str | None = None,
          precision: str | None = None, experiment: str | None = None, objectives: str | None = None,
          device: str | None = None, out: str | None = None, threads: int | None = None,
          limit: int | None = None, repeats: int | None = None, record: bool | None = None,
          drafts: str | None = None) -> None:
    """Run one benchmark.

    Args:
        what: which benchmark (backbone, train, decode).
        steps: timed steps (None = the benchmark's default; 3 for a quick smoke run).
        batch: batch size (None = the benchmark's default).
        checkpoint: decode only: a fine-tuned seq2seq checkpoint for BLEU of parallel decoding on a dev slice.
        precision: decode only: bf16 (default, the CPU fast path) or fp32, for both sides of every comparison.
        experiment: train only: the experiment YAML to time (default small-cpu.yaml, shipped in plmgen/configs).
        objectives: train only: comma-separated objectives (default plm,dae,mask-plm,mass, or a parallel
            experiment's own objective; the summary lines are the first's).
        device: train and decode: cuda or cpu (default: cuda when available for train, cpu for decode).
        out: decode only: the markdown report (default: under runs/bench/, or experiments/results/bench_decode.md
            with --record).
        threads: torch CPU threads (default: one per usable core). Benchmarks want a quiet machine.
        limit: decode only: test sentences for the speculative table with --checkpoint (default 100, 0 = all).
        repeats: decode only: timed runs per side, medians of alternating repeats (default 5).
        record: decode only: also rewrite experiments/results/bench_decode.md (a plain run writes under runs/).
        drafts: decode only: the speculative table's --speculate values (default 2,4,8; add trees: tree1:4+4).
    """
    if what not in BENCHMARKS:
        raise UserError(f"unknown benchmark {what!r}; choose one of {', '.join(BENCHMARKS)}")
    from ..threads import say_threads, setup_threads

    setup_threads(threads)
    say_threads()
    run = importlib.import_module(f"{__name__}.{what}").run
    if device not in (None, "cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {device!r}")
    given = {k: v for k, v in dict(steps=steps, batch=batch, checkpoint=checkpoint, precision=precision,
                                   experiment=experiment, objectives=objectives, device=device, out=out,
                                   limit=limit, repeats=repeats, record=record, drafts=drafts).items()
             if v is not None}
    accepted = inspect.signature(run).parameters
    for name in given:
        if name not in accepted:
            takers = [w for w in BENCHMARKS if name in inspect.signature(
                importlib.import_module(f"{__name__}.{w}").run).parameters]
            raise UserError(f"--{name} goes with `bench {' / '.join(takers)}` only")
    run(**given)
