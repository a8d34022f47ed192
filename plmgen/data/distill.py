"""Sequence-level knowledge distillation (Kim & Rush, 2016): a prepared folder whose training targets are a
teacher's translations.

    python cli.py distill --teacher runs/demo-ar/checkpoints/last.ckpt --data data/lo-de-en --out data/lo-de-en-kd

Any-order and non-autoregressive models learn from a teacher's outputs more easily than from human references,
which often admit several translations of one source (the "multi-modality" that makes positions decoded apart
disagree). The teacher (any checkpoint ``generate`` can decode, typically the ``prefix-lm`` baseline) translates the
training sources left to right (greedy, or ``--beam N``); dev and test are copied unchanged, so a student is still
judged against the human references. A teacher output that repeats a word (``evaluation.has_repeat``) where the
reference does not, or that is empty, is replaced by the reference (``--keep_repeats`` keeps it): otherwise the
student would learn the teacher's loops. ``--with_references`` trains on both: the original pairs followed by the
distilled ones. The manifest records the teacher's sha256, the source folder's manifest hash and these counts.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from plmgen.data.splits import (MANIFEST, SPLITS, Pair, load_manifest, load_pairs, refuse_foreign,
                                 write_dataset)
from plmgen.files import sha256_file
from plmgen.errors import UserError


def distilled_targets(hyps: list[str], refs: list[str], keep_repeats: bool = False) -> tuple[list[str], Counter]:
    """Teacher outputs hyps with the fallback rule applied -> (targets, counts of what was kept / replaced)."""
    from plmgen.evaluation import has_repeat

    out, counts = [], Counter()
    for h, r in zip(hyps, refs, strict=True):
        if not h.strip():
            out.append(r)
            counts["empty teacher output: reference kept"] += 1
        elif not keep_repeats and has_repeat(h) and not has_repeat(r):
            out.append(r)
            counts["teacher repeats a word: reference kept"] += 1
        else:
            out.append(h)
            counts["teacher output"] += 1
    return out, counts


def distill(*, teacher: str, data: str, out: str, beam: int = 1, keep_repeats: bool = False,
            with_references: bool = False, precision: str = "bf16", batch_size: int = 64, device: str | None = None,
            threads: int | None = None, force: bool = False) -> Path:
    """Write a copy of a prepared folder whose training targets are a teacher's translations (l2r, greedy or beam).

    Args:
        teacher: checkpoint that translates the training sources (runs/<name>/checkpoints/*.ckpt).
        data: prepared folder (``prepare``) whose training split is distilled; dev and test are copied unchanged.
        out: the new folder (e.g. data/lo-de-en-kd); refused if it exists, unless --force (which replaces only a
            prepared folder).
        beam: the teacher's beam size (1 = greedy).
        keep_repeats: keep teacher outputs that repeat a word where the reference does not (default: reference).
        with_references: keep the original training pairs too: the training split is the original pairs followed
            by the distilled ones (twice as many pairs).
        precision: fp32 or bf16 for the teacher.
        batch_size: sources decoded together.
        device: cpu, cuda, cuda:N (default: CUDA when available).
        threads: torch CPU threads (default: one per usable core).
        force: replace an existing --out (a prepared folder only).
    """
    from plmgen.decoding.generate import generate

    src_dir, out_dir = Path(data), Path(out)
    manifest = load_manifest(src_dir)
    if out_dir.resolve() == src_dir.resolve():
        raise UserError(f"--out {out}: the same folder as --data; choose a new folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise UserError(f"--out {out}: exists; pass --force to replace it")
        refuse_foreign(out_dir)  # --force replaces a prepared folder, never someone's other files
    if not Path(teacher).is_file():
        raise UserError(f"--teacher {teacher}: no such file")
    splits = {s: [Pair(a, b) for a, b in load_pairs(src_dir, s)] for s in SPLITS}
    work = out_dir.parent / f".{out_dir.name}.teacher"  # the teacher's output file, removed after
    work.mkdir(parents=True, exist_ok=True)
    try:
        (run,) = generate(checkpoint=teacher, split="train", data=str(src_dir), out=str(work / "train.hyp"),
                          order="l2r", beam=beam, precision=precision, batch_size=batch_size, device=device,
                          threads=threads, quiet=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    targets, counts = distilled_targets(run.hyps, [p.tgt for p in splits["train"]], keep_repeats)
    distilled = [Pair(p.src, t) for p, t in zip(splits["train"], targets)]
    splits["train"] = (splits["train"] if with_references else []) + distilled
    settings = {"keep_repeats": keep_repeats, "with_references": with_references, "precision": precision,
                "decoding": "l2r greedy" if beam == 1 else f"l2r beam {beam}",
                "counts": dict(sorted(counts.items()))}
    sources_info = [{"teacher": str(teacher), "sha256": sha256_file(Path(teacher))},
                    {"data": str(src_dir), "recipe": manifest.get("recipe"),
                     "manifest_sha256": sha256_file(src_dir / MANIFEST)}]
    path = write_dataset(out_dir, splits, manifest["src"], manifest["tgt"],
                         {"recipe": "distill", "sources": sources_info, "settings": settings}, Counter())
    print(f"{out_dir}: {len(targets)} training targets from the teacher "
          f"({counts['teacher output']} kept, {len(targets) - counts['teacher output']} references kept)"
          f"{', after the original pairs' if with_references else ''}; dev and test copied from {src_dir}")
    return path

