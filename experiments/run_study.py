"""Run a study: variants × seeds × fine-tuning budgets from one YAML spec, and write every table.

    python experiments/run_study.py --spec experiments/studies/anyorder-vs-ar.yaml --data data/lo-de-en

Each variant (``experiments/studies/*.yaml``: a pre-training config + overrides, or none; a fine-tuning config +
overrides; decoding orders; budgets) is pre-trained, fine-tuned to its largest budget with checkpoints at every
budget, and each checkpoint decodes the test split with every order. Writes ``<out>/results.md`` and
``results.json`` (scores as mean ± std over seeds, sacrebleu paired bootstrap / approximate randomization p-values
against the spec's baseline row, learning curves, measured FLOPs and predicted tokens per step, wall time, and a
provenance block) and copies them to ``experiments/results/studies/<name>/`` unless ``--record false``. Re-running
the same command resumes: finished cells are read from their markers, a killed training continues from its
``last.ckpt``. Layout and markers: ``plmgen/study/runner.py``. To use several cores, start the same command once
per core (``taskset -c 0 ... --tables false`` and ``taskset -c 1 ...``, each with ``OMP_NUM_THREADS=1``): the workers
share the cells through lock files.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def run_study(spec: str, data: str | None = None, out: str | None = None, variants: str | None = None,
              record: bool = True, tables: bool = True) -> Path | None:
    """Run (or resume) every cell of a study spec and write its tables; returns results.md.

    Args:
        spec: study spec YAML (experiments/studies/NAME.yaml).
        data: prepared data folder (default: the spec's ``data``).
        out: folder for the runs, markers and tables (default runs/studies/<spec name>).
        variants: comma-separated subset of the spec's variants (default: all).
        record: also copy results.md/results.json to experiments/results/studies/<spec name>/.
        tables: write the tables once every cell is finished (false: a helper worker that only runs cells).
    """
    import dataclasses

    from plmgen.errors import UserError
    from plmgen.study.runner import StudyRunner
    from plmgen.study.spec import load_spec
    from plmgen.study.tables import write_results

    s = load_spec(spec, data)
    if variants:
        names = [v.strip() for v in variants.split(",") if v.strip()]
        unknown = sorted(set(names) - {v.name for v in s.variants})
        if unknown:
            raise UserError(f"--variants: unknown {unknown}; the spec has {', '.join(v.name for v in s.variants)}")
        baselines = [b for b in s.baselines if b[0] in names]
        if not baselines:
            raise UserError(f"--variants must keep a baseline variant ({', '.join(b[0] for b in s.baselines)})")
        s = dataclasses.replace(s, variants=[v for v in s.variants if v.name in names], baselines=baselines)
    folder = Path(out or Path("runs") / "studies" / s.name)
    runner = StudyRunner(s, folder, argv=[sys.executable, *sys.argv])
    result = runner.run()
    if not tables:
        print(f"every cell of {s.name} is finished (tables left to the worker with --tables true)")
        return None
    table = write_results(s, result, folder, runner.argv)
    if record:
        dest = ROOT / "experiments" / "results" / "studies" / s.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("results.md", "results.json"):
            shutil.copyfile(folder / name, dest / name)
    print(f"wrote {table}")
    return table


if __name__ == "__main__":
    from plmgen.errors import run_cli

    sys.exit(run_cli(run_study, as_positional=False))
