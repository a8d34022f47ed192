"""How much adaptivity can a model afford? Adaptive orders inside a window of the W leftmost open positions.

    python experiments/run_window.py --checkpoints runs/demo/finetune/checkpoints/last.ckpt,... --precision bf16

For every checkpoint: l2r, and confidence / entropy / margin with ``@wW`` for each W in ``--windows`` and without a
window, on the full test split (predicted length, greedy). Each decode is kept under ``--work`` (default
``runs/window-study/<run>/`` for ``runs/<run>/[finetune/]checkpoints/*.ckpt``, not tracked: the hypotheses are
translations of the Debian help text), so a rerun after an interruption only decodes what is missing. The tables go to
``--out`` (default
``runs/window-study/``; ``--record`` writes ``experiments/results/orders/window/`` instead): per checkpoint BLEU,
chrF, % of hypotheses with an immediately repeated word, steps, tokens/s and the paired-bootstrap p against the
same checkpoint's l2r; across checkpoints the mean ± std of each spec's BLEU gap to l2r. ``results.json`` holds
every number and the provenance (commit, command, checkpoint / data hashes, precision).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def _specs(orders: str, windows: str) -> list[str]:
    ws = [int(w) for w in windows.split(",") if w.strip()]
    return ["l2r"] + [f"{o}@w{w}" for o in orders.split(",") for w in ws] + orders.split(",")


def _decode(tr, sources: list[list[int]], spec: str, work: Path, bf16: bool, batch_size: int) -> dict:
    """Decode (or reuse) one spec -> {"hyps", "steps", "tokens_per_s"}; the record is written atomically."""
    from plmgen.config import DecodeConfig, TranslateConfig
    from plmgen.decoding.generate import length_cap, parse_order_spec
    from plmgen.decoding.translate import translate
    from plmgen.files import atomic_write_text
    from plmgen.length import parse_length_mode

    path = work / f"{spec}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    dcfg = DecodeConfig(**parse_order_spec(spec), bf16=bf16, max_len=length_cap(tr, [parse_length_mode("predict")]))
    run = translate(tr, sources, TranslateConfig(decode=dcfg, batch_size=batch_size), label=spec)
    rec = {"hyps": run.hyps, "steps": run.steps, "tokens_per_s": run.tokens / max(run.seconds, 1e-9)}
    atomic_write_text(path, json.dumps(rec))
    return rec


def _checkpoint_rows(recs: dict[str, dict], refs: list[str], bootstrap: int) -> dict[str, dict]:
    from plmgen.evaluation import corpus_scores
    from plmgen.study.stats import paired_tests

    others = {s: r["hyps"] for s, r in recs.items() if s != "l2r"}
    tests, sigs = paired_tests(recs["l2r"]["hyps"], others, refs, bs=bootstrap, ar=0)
    rows = {}
    for spec, r in recs.items():
        s = corpus_scores(r["hyps"], refs)
        rows[spec] = {"bleu": s.bleu, "chrf": s.chrf, "rep": s.repetition, "steps": r["steps"],
                      "tokens_per_s": r["tokens_per_s"], "p_vs_l2r": tests.get(spec, {}).get("bleu_p_bs"),
                      "signatures": s.signature_lines()}
    rows["l2r"]["bootstrap_signature"] = sigs.get("bs")
    return rows


def _tables(specs: list[str], per_ckpt: dict[str, dict[str, dict]]) -> list[str]:
    from plmgen.study.stats import fmt_p, pm

    labels = list(per_ckpt)
    lines = ["## BLEU gap to l2r (mean ± std over the checkpoints) and repeated words", "",
             "| spec | BLEU − l2r | chrF − l2r | rep % | checkpoints with p < 0.05 (worse / better) |",
             "|---|---|---|---|---|"]
    for spec in specs:
        gaps = [per_ckpt[c][spec]["bleu"] - per_ckpt[c]["l2r"]["bleu"] for c in labels]
        cgaps = [per_ckpt[c][spec]["chrf"] - per_ckpt[c]["l2r"]["chrf"] for c in labels]
        ps = [(per_ckpt[c][spec]["p_vs_l2r"], g) for c, g in zip(labels, gaps)]
        sig = f"{sum(p is not None and p < 0.05 and g < 0 for p, g in ps)} / " \
              f"{sum(p is not None and p < 0.05 and g > 0 for p, g in ps)}" if spec != "l2r" else "–"
        lines.append(f"| {spec} | {pm(gaps)} | {pm(cgaps)} | {pm([per_ckpt[c][spec]['rep'] for c in labels], 1)} | "
                     f"{sig} |")
    for c in labels:
        lines += ["", f"## {c}", "", "| spec | BLEU | chrF | rep % | steps | tokens/s | p vs l2r (paired bootstrap) |",
                  "|---|---|---|---|---|---|---|"]
        for spec in specs:
            r = per_ckpt[c][spec]
            lines.append(f"| {spec} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['rep']:.1f} | {r['steps']:.2f} | "
                         f"{r['tokens_per_s']:.0f} | {fmt_p(r['p_vs_l2r']) if spec != 'l2r' else '–'} |")
    return lines


def run_window(checkpoints: str, orders: str = "confidence,entropy,margin", windows: str = "2,3,4,8",
               precision: str = "bf16", batch_size: int = 32, limit: int = 0, bootstrap: int = 1000,
               work: str | None = None, out: str | None = None, record: bool = False) -> Path:
    """Decode every checkpoint with l2r and each adaptive order in each window; write README.md + results.json.

    Args:
        checkpoints: comma-separated fine-tuned seq2seq checkpoints (independent training seeds / recipes).
        orders: adaptive orders to window.
        windows: window sizes W (each order also runs without a window).
        precision: fp32 or bf16.
        batch_size: sources decoded together.
        limit: first N test sentences only (0 = all).
        bootstrap: paired-bootstrap resamples (sacrebleu) against each checkpoint's l2r.
        work: folder for the per-decode records (default runs/window-study).
        out: folder for README.md and results.json (default: the work folder).
        record: write experiments/results/orders/window/ (overrides --out).
    """
    from plmgen.decoding.generate import read_inputs
    from plmgen.decoding.translate import load_translator
    from plmgen.errors import UserError
    from plmgen.files import atomic_write_text
    from plmgen.config.base import parse_precision
    from plmgen.files import sha256_file
    from plmgen.study.measure import environment

    paths = [Path(c) for c in checkpoints.split(",") if c.strip()]
    for p in paths:
        if not p.is_file():
            raise UserError(f"--checkpoints: {p}: no such file")
    specs = _specs(orders, windows)
    bf16 = parse_precision(precision, "--precision") == "bf16"
    work_root = Path(work) if work else ROOT / "runs" / "window-study"
    per_ckpt, prov = {}, {"checkpoints": {}, **environment()}
    for p in paths:
        run_dir = p.resolve().parents[1]  # runs/<label>/finetune/checkpoints/x.ckpt or runs/<label>/checkpoints/x.ckpt
        label = run_dir.parent.name if run_dir.name == "finetune" else run_dir.name
        if label in per_ckpt:
            label = f"{label}-{len(per_ckpt)}"
        folder = work_root / label
        folder.mkdir(parents=True, exist_ok=True)
        tr = load_translator(str(p))
        texts, refs, _ = read_inputs(None, "test", None, None, tr, limit)
        sources = tr.tokenizer.encode_batch(texts)
        recs = {}
        if any(not (folder / f"{spec}.json").is_file() for spec in specs):  # warm up before the first timed decode
            _decode(tr, sources[:2], "l2r", folder / "warmup", bf16, batch_size)
        for spec in specs:
            recs[spec] = _decode(tr, sources, spec, folder, bf16, batch_size)
            print(f"{label} {spec}: done", flush=True)
        per_ckpt[label] = _checkpoint_rows(recs, refs, bootstrap)
        prov["checkpoints"][label] = {"path": str(p), "sha256": sha256_file(p),
                                      "refs_sha256": hashlib.sha256("\n".join(refs).encode()).hexdigest()}
    dest = ROOT / "experiments" / "results" / "orders" / "window" if record else Path(out) if out else work_root
    first = per_ckpt[next(iter(per_ckpt))]["l2r"]
    prov.update(precision=precision, batch_size=batch_size, limit=limit, specs=specs)
    text = "\n".join(["# Adaptive orders inside a window (generated by experiments/run_window.py)", "",
                      f"Full test split{f' (first {limit})' if limit else ''}, predicted length, greedy, {precision}, "
                      f"batch {batch_size}; commit `{prov['git_commit'][:10]}`.", "", *_tables(specs, per_ckpt), "",
                      *first["signatures"], f"paired bootstrap: `{first.get('bootstrap_signature')}`", ""])
    atomic_write_text(dest / "README.md", text)
    atomic_write_text(dest / "results.json", json.dumps({"provenance": prov, "rows": per_ckpt}, indent=1))
    print(text)
    return dest


if __name__ == "__main__":
    from plmgen.errors import run_cli

    sys.exit(run_cli(run_window, as_positional=False))
