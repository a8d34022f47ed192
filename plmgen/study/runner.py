"""Run a study spec cell by cell and write its tables (``experiments/run_study.py`` is the command).

Layout under ``--out`` (every ``*.json`` marker is written atomically once its cell is finished, so a killed study
re-run with the same command picks up at the first unfinished cell; a killed training resumes from its
``last.ckpt``):

    tokenizer/spiece.model                     one tokenizer for every run (trained on both sides of the train split)
    compute/<hash>.json                        measured FLOPs / predicted tokens per step of one resolved config
    pretrain/<variant>/seed<k>/done.json       a pre-training run (shared by variants with the same resolved config)
    finetune/<variant>/seed<k>/done.json       a fine-tuning run, checkpoints/budget-<steps>.ckpt at every budget
    eval/<variant>/seed<k>/budget-<steps>.json hypotheses and scores of every order at one budget
    results.md, results.json                   the tables and the provenance block
    <marker>.lock                              a cell another worker is on (its pid and host)

Workers: the same command started N times (one core each, e.g. ``taskset -c i``) shares the grid. Each step of a
cell (pre-training, fine-tuning, each budget's evaluation) is claimed by an atomically created ``.lock`` beside its
marker; a worker skips cells another worker holds and comes back to them, and takes over a lock whose process has
died on this host. Only ``--tables true`` workers write the tables, once every cell is finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plmgen.config import ExperimentConfig
from plmgen.errors import UserError
from plmgen.files import atomic_write_text
from plmgen.files import sha256_file
from plmgen.study.measure import SaveAtSteps, measure_step
from plmgen.study.spec import StudySpec, Variant, resolve


def _key(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _write(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False, default=str))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _place_lock(lock: Path, text: str) -> bool:
    """Create ``lock`` holding ``text`` atomically (a complete temporary file hard-linked into place, so no other
    worker ever reads it empty or half-written) -> False when it already exists."""
    tmp = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _holder_alive(lock: Path) -> bool | None:
    """Whether the worker named in ``lock`` ("pid host") may still run; None when the lock is gone. A lock naming
    another host cannot be checked and counts as alive; one that does not parse (written by hand) counts as dead."""
    try:
        pid, _, host = lock.read_text().partition(" ")
    except FileNotFoundError:
        return None
    if not pid.strip().isdigit() or int(pid) <= 0:
        return False
    return host.strip() != socket.gethostname() or _alive(int(pid))


@contextlib.contextmanager
def claim(marker: Path):
    """Yield True while this process holds ``<marker>.lock``, False when another live worker holds it. A lock left
    by a dead process on this host (or one that names no process) is taken over; the lock is removed on exit."""
    lock = marker.with_name(marker.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        if _place_lock(lock, f"{os.getpid()} {socket.gethostname()}"):
            try:
                yield True
            finally:
                lock.unlink(missing_ok=True)
            return
        alive = _holder_alive(lock)
        if alive:
            yield False
            return
        if alive is False:
            lock.unlink(missing_ok=True)  # stale: its worker died
    yield False


@dataclass
class Cell:
    """One (variant, seed): its resolved pre-training (None: none) and fine-tuning configs."""

    variant: Variant
    seed: int
    pretrain: ExperimentConfig | None
    finetune: ExperimentConfig


class StudyRunner:
    def __init__(self, spec: StudySpec, out: str | Path, argv: list[str] | None = None, poll_s: float = 10.0) -> None:
        self.spec, self.out, self.argv, self.poll_s = spec, Path(out), argv, poll_s
        data = Path(spec.data)
        if not (data / "manifest.json").is_file():
            raise UserError(f"data {spec.data}: not a prepared folder (no manifest.json); run `python cli.py prepare`")
        self.trained: list[str] = []  # run folders trained by this invocation (the resume test reads it)

    # -- the shared tokenizer ----------------------------------------------------------------------------------------
    def tokenizer(self, vocab_size: int):
        from plmgen.data.splits import monolingual_text
        from plmgen.tokenizer import Tokenizer

        path = self.out / "tokenizer" / "spiece.model"
        while not path.is_file():
            with claim(path) as mine:
                if mine:
                    if not path.is_file():  # re-checked under the lock: a worker may have just finished it
                        Tokenizer.train(monolingual_text(self.spec.data), out_prefix=path.with_suffix(""),
                                        vocab_size=vocab_size, seed=0)
                    break
            self.wait()  # another worker is training it
        return Tokenizer.load(path)

    # -- resolved configs ---------------------------------------------------------------------------------------------
    def _finish(self, cfg: ExperimentConfig, run_dir: Path, seed: int, tok) -> ExperimentConfig:
        return dataclasses.replace(
            cfg, name=run_dir.name if run_dir.name != f"seed{seed}" else f"{run_dir.parent.name}-seed{seed}",
            out_dir=str(run_dir), tokenizer=str(tok.path), model=dataclasses.replace(cfg.model, vocab_size=tok.vocab_size),
            data=dataclasses.replace(cfg.data, path=self.spec.data, seed=seed),
            # One process per cell: the runner's workers use the cores (a config's DDP, like the demo's, would have
            # Lightning start its second rank by running the study command again).
            train=dataclasses.replace(cfg.train, progress_bar=False, devices=1, strategy="auto", num_nodes=1))

    def pretrain_config(self, v: Variant, seed: int, tok, steps: int | None = None) -> ExperimentConfig | None:
        if v.pretrain_config is None:
            return None
        steps = steps or v.pretrain_steps or self.spec.pretrain_steps
        cfg = resolve(v.pretrain_config, v.pretrain, max_steps=steps, seed=seed)
        return self._finish(cfg, self.out / "pretrain" / v.name / f"seed{seed}", seed, tok)

    def finetune_config(self, v: Variant, seed: int, tok, pre: ExperimentConfig | None) -> ExperimentConfig:
        from plmgen.train import SHAPE_FIELDS

        cfg = resolve(v.finetune_config, v.finetune, max_steps=max(v.budgets), seed=seed)
        if pre is not None:  # --init_from takes the backbone's shape from the pre-training
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **{f: getattr(pre.model, f) for f in SHAPE_FIELDS}))
        return self._finish(cfg, self.out / "finetune" / v.name / f"seed{seed}", seed, tok)

    # -- compute ----------------------------------------------------------------------------------------------------
    def compute(self, cfg: ExperimentConfig | None, tok) -> dict[str, float] | None:
        """FLOPs and predicted tokens per step of a config (seed, steps and folders do not change them)."""
        if cfg is None:
            return None
        d = cfg.to_dict()
        for k in ("name", "out_dir"):
            d.pop(k)
        d["train"] = {k: v for k, v in d["train"].items() if k not in ("max_steps", "seed", "progress_bar")}
        d["data"] = {k: v for k, v in d["data"].items() if k != "seed"}
        path = self.out / "compute" / f"{_key(d)}.json"
        while (got := _read(path)) is None:  # one worker measures; the others wait for its file
            with claim(path) as mine:
                if mine and _read(path) is None:
                    _write(path, measure_step(cfg, tok))
                    continue
            if not mine:
                time.sleep(min(self.poll_s, 1.0))
        return got

    def matched_steps(self, v: Variant, tok) -> int | None:
        """Pre-training steps of ``v``: equal FLOPs to ``compute_matched``'s steps when the spec asks for it."""
        s = self.spec
        if v.pretrain_config is None:
            return None
        if s.compute_matched is None or v.pretrain_steps:
            return v.pretrain_steps or s.pretrain_steps
        ref = s.variant(s.compute_matched)
        f_ref = self.compute(self.pretrain_config(ref, s.seeds[0], tok), tok)["flops_per_step"]
        f_v = self.compute(self.pretrain_config(v, s.seeds[0], tok), tok)["flops_per_step"]
        return max(1, round((ref.pretrain_steps or s.pretrain_steps) * f_ref / f_v))

    def cells(self, tok) -> list[Cell]:
        cells, shared = [], {}
        for v in self.spec.variants:
            steps = self.matched_steps(v, tok)
            for seed in self.spec.seeds:
                pre = self.pretrain_config(v, seed, tok, steps)
                if pre is not None:  # variants with the same resolved pre-training share one run
                    d = {k: x for k, x in pre.to_dict().items() if k not in ("name", "out_dir")}
                    pre = shared.setdefault(_key(d), pre)
                cells.append(Cell(v, seed, pre, self.finetune_config(v, seed, tok, pre)))
        return cells

    # -- training and evaluation cells ---------------------------------------------------------------------------------
    def train(self, cfg: ExperimentConfig, init_from: Path | None, budgets: list[int] | None = None) -> dict:
        """Train one run to its end (resuming a killed one) unless its done marker exists; returns the marker."""
        from plmgen.train import run_training

        run_dir = cfg.run_dir
        marker = run_dir / "done.json"
        if (done := _read(marker)) is not None:
            # read back through today's dataclasses: a field added since (at its default) is not a change
            stored = type(cfg).from_dict(done["config"]).to_dict()
            if json.loads(json.dumps(stored, default=str)) != json.loads(json.dumps(cfg.to_dict(), default=str)):
                raise UserError(f"{run_dir} was trained with another config than the spec resolves to now; "
                                "use a new --out for a changed spec")
            return done
        ckpt_dir = run_dir / "checkpoints"
        resume = "last" if (ckpt_dir / "last.ckpt").is_file() else None
        callbacks = [SaveAtSteps(budgets, ckpt_dir)] if budgets else []
        t0 = time.perf_counter()
        run_training(cfg, init_from=None if resume else (str(init_from) if init_from else None), resume=resume,
                     callbacks=callbacks)
        self.trained.append(str(run_dir))
        ckpts = {p.name: sha256_file(p) for p in sorted(ckpt_dir.glob("*.ckpt"))
                 if p.name.startswith(("budget-", "last"))}
        done = {"wall_s": time.perf_counter() - t0, "resumed": bool(resume), "steps": cfg.train.max_steps,
                "val_loss": last_val_loss(run_dir), "checkpoints": ckpts, "config": cfg.to_dict()}
        _write(marker, done)
        return done

    def evaluate(self, cell: Cell, budget: int, refs: list[str]) -> dict:
        from plmgen.decoding.generate import generate
        from plmgen.evaluation import corpus_scores

        s = self.spec
        marker = self.eval_marker(cell, budget)
        done = _read(marker) or {}
        if self.holds_every_order(done, cell):
            return done
        ckpt = SaveAtSteps.path(cell.finetune.run_dir / "checkpoints", budget)
        result = dict(done)  # orders added to the spec after this cell was evaluated: only they are decoded
        for tag, order, length in self.eval_tags(cell):  # one generate per order: hypotheses only (no plots)
            if tag not in result:
                hyp_file = marker.with_suffix("") / f"{order}.{length}.txt".replace("/", "_")
                (r,) = generate(checkpoint=str(ckpt), split=s.split, data=s.data, order=order, length=length,
                                out=str(hyp_file), limit=s.limit, precision=s.precision, seed=cell.seed, quiet=True)
                sc = corpus_scores(r.hyps, refs)
                result[tag] = {"bleu": sc.bleu, "chrf": sc.chrf, "repetition": sc.repetition, "steps": r.steps,
                               "seconds": r.seconds, "bleu_signature": sc.bleu_signature,
                               "chrf_signature": sc.chrf_signature, "hyps": r.hyps}
                _write(marker, result)  # after every order: an interrupted evaluation keeps what it decoded
        return result

    @staticmethod
    def eval_tags(cell: Cell) -> list[tuple[str, str, str]]:
        """(tag, order, length) of every decode a cell's evaluation holds (tag: the order, with the length mode
        when the variant has several)."""
        lengths = cell.variant.lengths.split(",")
        return [(order if len(lengths) == 1 else f"{order} ({length})", order, length)
                for order in cell.variant.orders for length in lengths]

    @classmethod
    def holds_every_order(cls, done: dict, cell: Cell) -> bool:
        """True when an evaluation record ``done`` holds every decode of the cell's variant."""
        return all(tag in done for tag, _, _ in cls.eval_tags(cell))

    def evaluated(self, cell: Cell, budget: int) -> bool:
        return self.holds_every_order(_read(self.eval_marker(cell, budget)) or {}, cell)

    def wait(self) -> None:
        time.sleep(self.poll_s)

    def eval_marker(self, cell: Cell, budget: int) -> Path:
        return self.out / "eval" / cell.variant.name / f"seed{cell.seed}" / f"budget-{budget}.json"

    # -- the whole study ------------------------------------------------------------------------------------------------
    def advance(self, cell: Cell, refs: list[str]) -> bool:
        """Do every unfinished step of a cell that no other worker holds, in order; True once all are finished."""
        init = cell.pretrain.run_dir / "checkpoints" / "last.ckpt" if cell.pretrain is not None else None
        steps = [] if cell.pretrain is None else [(cell.pretrain.run_dir / "done.json", Path.is_file,
                                                   lambda: self.train(cell.pretrain, None))]
        steps.append((cell.finetune.run_dir / "done.json", Path.is_file,
                      lambda: self.train(cell.finetune, init, cell.variant.budgets)))
        steps += [(self.eval_marker(cell, b), lambda _, b=b: self.evaluated(cell, b),
                   lambda b=b: self.evaluate(cell, b, refs)) for b in cell.variant.budgets]
        for marker, finished, work in steps:
            if finished(marker):
                continue
            with claim(marker) as mine:
                if not mine:
                    return False  # another worker is on it: come back later
                work()
        return True

    def run(self) -> dict:
        from plmgen.decoding.generate import read_inputs

        s = self.spec
        first = s.variants[0]
        vocab = resolve(first.pretrain_config or first.finetune_config, {}).model.vocab_size
        tok = self.tokenizer(vocab)
        cells = self.cells(tok)
        _, refs, _ = read_inputs(None, s.split, s.data, None, None, s.limit)
        pending = cells
        while pending:
            left = []
            for cell in pending:
                if self.advance(cell, refs):
                    print(f"{cell.variant.name} seed {cell.seed}: done", flush=True)
                else:
                    left.append(cell)
            if len(left) == len(pending):
                self.wait()  # every unfinished cell is held by another worker
            pending = left
        records = []
        for cell in cells:  # every marker exists now: this reads them (and checks their configs)
            pre_done = self.train(cell.pretrain, None) if cell.pretrain is not None else None
            ft_done = self.train(cell.finetune, None, cell.variant.budgets)
            evals = {b: self.evaluate(cell, b, refs) for b in cell.variant.budgets}
            records.append({"variant": cell.variant.name, "seed": cell.seed, "pretrain": pre_done, "finetune": ft_done,
                            "pretrain_compute": self.compute(cell.pretrain, tok),
                            "finetune_compute": self.compute(cell.finetune, tok), "evals": evals,
                            "pretrain_dir": str(cell.pretrain.run_dir) if cell.pretrain else None})
        return {"records": records, "refs": refs, "tokenizer": tok.path}


def last_val_loss(run_dir: Path) -> float | None:
    """The last logged ``val/loss`` of a run (CSV logger), or None."""
    import csv

    files = sorted((Path(run_dir) / "logs" / "csv").glob("version_*/metrics.csv"))
    rows = [r for f in files for r in csv.DictReader(open(f, encoding="utf-8")) if r.get("val/loss")]
    return float(rows[-1]["val/loss"]) if rows else None
