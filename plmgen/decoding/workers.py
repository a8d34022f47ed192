"""A grid of decoding runs (orders × length modes) in worker processes: ``generate --orders ... --workers N``.

On a CPU one decoding step is too small to keep several cores busy, so N processes, each with its share of the
threads, decode N runs at once (the README demo's five orders on 2 cores: see experiments/results/demo/). Each
worker loads the checkpoint once; a run goes to whichever worker is free, the adaptive orders (the slowest) first.
Outputs are those of one process: every random stream of a run is a function of (seed, example index), never of the
process or of the other runs (tests/test_generate_cli.py::test_workers_decode_the_grid_as_one_process_does).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed

from plmgen.config import TranslateConfig
from plmgen.decoding.translate import DecodeRun, Translator, load_translator, translate

_WORKER: dict = {}  # the worker process's Translator and inputs, set once by _start


def _start(checkpoint: str, device: str, threads: int, sources, ref_ids) -> None:
    from plmgen.threads import setup_threads

    setup_threads(threads)
    _WORKER.update(tr=load_translator(checkpoint, device), sources=sources, ref_ids=ref_ids)


def _decode(cfg: TranslateConfig, label: str) -> DecodeRun:
    return translate(_WORKER["tr"], _WORKER["sources"], cfg, _WORKER["ref_ids"], None, label=label)


def cost_rank(cfg: TranslateConfig) -> int:
    """0 for the runs to start first (adaptive orders: a query row per open slot, beams, length beams), 1 for the
    rest."""
    from plmgen.decoding.orders import ORDERS

    return 0 if ORDERS[cfg.decode.order].adaptive or cfg.decode.beam > 1 or cfg.length_beam > 1 else 1


def run_in_workers(tr: Translator, checkpoint: str, jobs: list[tuple[TranslateConfig, str, str]], sources,
                   ref_ids, workers: int, threads: int, say) -> list[DecodeRun]:
    """Decode ``jobs`` ((config, label, description) each) in ``workers`` spawned processes with ``threads`` torch
    threads each -> the runs in the order of ``jobs``. ``say`` gets one line per finished run."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's thread pools
    runs: list[DecodeRun | None] = [None] * len(jobs)
    start = (checkpoint, str(tr.device), threads, sources, ref_ids)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start, initargs=start) as pool:
        todo = sorted(range(len(jobs)), key=lambda i: cost_rank(jobs[i][0]))
        futures = {pool.submit(_decode, jobs[i][0], jobs[i][1]): i for i in todo}
        try:
            for f in as_completed(futures):
                i = futures[f]
                runs[i] = f.result()
                say(f"{jobs[i][2]}: {len(sources)} sources in {runs[i].seconds:.1f} s")
        except BaseException:  # a failed run (or Ctrl-C) stops the grid: the queued runs are not started
            pool.shutdown(cancel_futures=True)
            raise
    return runs
