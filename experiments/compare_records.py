"""Paired comparison of two models' decodes of the same test split (``run_window.py`` records).

    python experiments/compare_records.py --base runs/window-study/demo --new runs/window-study/ft-x \
        --refs data/lo-de-en/test.en --specs l2r,confidence

For each spec: both models' BLEU / chrF / repeated-word rate, the paired-bootstrap p of the BLEU difference
(sacrebleu, 1,000 resamples) and the exact sign-test p of the repeated-word difference
(``plmgen.study.stats.repetition_sign_test``), as one markdown table on stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(base: str, new: str, refs: str, specs: str = "l2r", bootstrap: int = 1000) -> None:
    """Args:
        base: folder of the baseline's records (<spec>.json with "hyps").
        new: folder of the compared model's records.
        refs: the references, one per line (the split the records decoded).
        specs: comma-separated decoding specs to compare.
        bootstrap: paired-bootstrap resamples.
    """
    from plmgen.errors import UserError
    from plmgen.evaluation import corpus_scores
    from plmgen.study.stats import fmt_p, paired_tests, repetition_sign_test

    ref_lines = Path(refs).read_text(encoding="utf-8").splitlines()
    print("| spec | BLEU base → new | p (BLEU) | chrF base → new | rep % base → new | p (rep) |")
    print("|---|---|---|---|---|---|")
    for spec in specs.split(","):
        hyps = []
        for folder in (base, new):
            path = Path(folder) / f"{spec}.json"
            if not path.is_file():
                raise UserError(f"--base/--new: {path}: no such record")
            hyps.append(json.loads(path.read_text(encoding="utf-8"))["hyps"])
            if len(hyps[-1]) != len(ref_lines):
                raise UserError(f"{path}: {len(hyps[-1])} hypotheses but {refs} has {len(ref_lines)} lines")
        tests, _ = paired_tests(hyps[0], {"new": hyps[1]}, ref_lines, bs=bootstrap, ar=0)
        a, b = (corpus_scores(h, ref_lines) for h in hyps)
        _, _, p_rep = repetition_sign_test(*hyps)
        p_bleu = fmt_p(tests["new"]["bleu_p_bs"])
        print(f"| {spec} | {a.bleu:.2f} → {b.bleu:.2f} ({b.bleu - a.bleu:+.2f}) | {p_bleu} | {a.chrf:.2f} → {b.chrf:.2f} | "
              f"{a.repetition:.2f} → {b.repetition:.2f} | {p_rep:.1e} |", flush=True)


if __name__ == "__main__":
    from plmgen.errors import run_cli

    sys.exit(run_cli(main, as_positional=False))
