"""``evaluate``: sacrebleu BLEU and chrF of detokenized hypotheses, with signatures; markdown result tables.

Every BLEU plmgen prints comes from here, so every number carries its sacrebleu signature (tokenizer, smoothing,
version) and can be compared with published ones. Scores are computed on detokenized text: the sentencepiece
pieces a model emits are never scored directly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

from plmgen.errors import UserError


@dataclass
class Scores:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str
    bleu_detail: str  # sacrebleu's one-line summary: n-gram precisions, brevity penalty, lengths
    n: int  # segments scored
    repetition: float = 0.0  # % of hypotheses with an immediately repeated word (see repetition_rate)
    unk: float = 0.0  # % of hypotheses with the unknown-token mark " ⁇ "

    def lines(self) -> list[str]:
        """Human-readable lines as the CLI prints them."""
        return [f"BLEU = {self.bleu:.2f}  ({self.bleu_detail})  signature: {self.bleu_signature}",
                f"chrF = {self.chrf:.2f}  signature: {self.chrf_signature}",
                f"repeated word in {self.repetition:.1f}% of hypotheses, ⁇ in {self.unk:.1f}%"]

    def signature_lines(self) -> list[str]:
        """Markdown lines naming both metrics' sacrebleu signatures, for under a table."""
        return [f"BLEU signature: `{self.bleu_signature}`", f"chrF signature: `{self.chrf_signature}`"]

    def to_dict(self) -> dict[str, Any]:
        return {"bleu": self.bleu, "chrf": self.chrf, "bleu_signature": self.bleu_signature,
                "chrf_signature": self.chrf_signature, "n": self.n, "repetition": self.repetition, "unk": self.unk}


def has_repeat(text: str) -> bool:
    """An immediately repeated word ("Click Click", "the. the."), compared case-insensitively on whitespace words."""
    words = text.lower().split()
    return any(a == b for a, b in zip(words, words[1:]))


def repetition_rate(hyps: Sequence[str]) -> float:
    """% of segments with an immediately repeated word: the loop symptom of a weak or badly ordered decoder
    (references of lo-de-en: ~0.1 %)."""
    return 100.0 * sum(map(has_repeat, hyps)) / max(1, len(hyps))


def unk_rate(hyps: Sequence[str]) -> float:
    """% of segments containing sentencepiece's unknown-token mark " ⁇ " (text the tokenizer could not represent)."""
    return 100.0 * sum("\u2047" in h for h in hyps) / max(1, len(hyps))


def corpus_scores(hyps: Sequence[str], refs: Sequence[str]) -> Scores:
    """Corpus BLEU (13a tokenization, exp smoothing: sacrebleu defaults) and chrF2 of hyps against one reference."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(list(hyps), [list(refs)])
    c = chrf.corpus_score(list(hyps), [list(refs)])
    detail = str(b).split(" ", 3)[-1]  # drop the leading "BLEU = xx.xx"
    return Scores(bleu=float(b.score), chrf=float(c.score), bleu_signature=str(bleu.get_signature()),
                  chrf_signature=str(chrf.get_signature()), bleu_detail=detail, n=len(hyps),
                  repetition=repetition_rate(hyps), unk=unk_rate(hyps))


def read_segments(path: str | os.PathLike) -> list[str]:
    """Lines of a hypothesis/reference file (``\\n``-separated UTF-8, errors name ``file:line``)."""
    from plmgen.data.userdata import read_lines

    return read_lines(path)


def evaluate(*, hyp: str, ref: str) -> Scores:
    """Print sacrebleu BLEU and chrF of a hypothesis file against a reference file, with their signatures.

    Args:
        hyp: detokenized hypotheses, one segment per line.
        ref: detokenized references, line i for hypothesis line i.
    """
    hyps, refs = read_segments(hyp), read_segments(ref)
    if len(hyps) != len(refs):
        raise UserError(f"line counts differ: --hyp {hyp} has {len(hyps)} lines but --ref {ref} has {len(refs)}")
    if not refs:
        raise UserError(f"--ref {ref} is empty; nothing to score")
    s = corpus_scores(hyps, refs)
    for line in s.lines():
        print(line)
    return s


# --- tables ---------------------------------------------------------------------------------------------------------

def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (dicts); columns default to the first row's keys, floats get 2 digits."""
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(out) + "\n"
