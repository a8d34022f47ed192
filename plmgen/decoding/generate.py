"""``generate``: the command line of the translate API (``plmgen.decoding.translate``).

Flow: parse the flags into ``TranslateConfig`` (a nested ``DecodeConfig``) -> load the checkpoint onto ``--device``
(default: CUDA when available) -> read sources (a file, or a split of the prepared data folder) -> ``translate`` ->
detokenized hypotheses written atomically. ``--trace`` writes one JSON line per sentence with the target positions
filled at every step and each slot's piece and log-probability; ``--evaluate`` scores against the references with
sacrebleu. ``--orders a,b,c`` (optionally × ``--lengths``) runs a grid and writes a markdown table (BLEU, chrF,
steps, tokens/s) plus PNG plots.

An order spec is a strategy name from ``plmgen.decoding.ORDERS``, optionally with ``@N`` (positions filled per
step, e.g. ``parallel@4``), ``@P`` with 0 < P < 1 (a confidence threshold, e.g. ``threshold@0.7``) or ``@wW`` (an
adaptive order choosing among the W leftmost open positions only, e.g. ``entropy@w2``) or ``@dλ`` (an adaptive order
whose slots lose λ per open slot between them and the decided text on their left, e.g. ``confidence@d1``), and
optionally with ``+beamB`` (beam search of width B for that entry, whatever ``--beam`` says, e.g. ``l2r,l2r+beam4``
compares greedy and beam in one table).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from plmgen.config import DecodeConfig, TranslateConfig, parse_precision, parse_speculate
from plmgen.decoding.translate import DecodeRun, Translator, load_translator, resolve_device, translate
from plmgen.errors import UserError
from plmgen.files import atomic_write_text
from plmgen.length import parse_length_mode
from plmgen.threads import setup_threads

# Bounds on the search: each beam / length candidate multiplies time and cache memory, and targets far past the
# training length are neither meaningful nor cheap (the cache holds n_layer x length x d_model per row).
MAX_BEAM, MAX_LENGTH_BEAM, MAX_BATCH = 64, 16, 4096
MAX_LENGTH_FACTOR = 4  # --length N up to 4x the training sequence length


def parse_order_spec(spec: str, flag: str = "--order") -> dict:
    """``name`` | ``name@N`` | ``name@P`` | ``name@wW`` | ``name@dλ``, each optionally ``+beamB`` -> DecodeConfig
    fields (order, k_per_step / threshold / window / ahead_penalty, beam)."""
    base, plus, extra = spec.strip().partition("+")
    fields = _parse_order(base, spec, flag)
    if not plus:
        return fields
    if not (extra.startswith("beam") and extra[4:].isdigit() and 1 <= int(extra[4:]) <= MAX_BEAM):
        raise UserError(f"{flag}: {spec!r}: a beam is NAME+beamB with an integer B in [1, {MAX_BEAM}]")
    if fields.get("k_per_step", 1) > 1 or "threshold" in fields or fields["order"] == "threshold":
        raise UserError(f"{flag}: {spec!r}: beam search fills one position per step; drop @N / @P or +beam")
    return {**fields, "beam": int(extra[4:])}


def _parse_order(spec: str, full: str, flag: str) -> dict:
    """``parse_order_spec`` without the ``+beamB`` suffix (``full``: the whole spec, for messages)."""
    from plmgen.decoding.orders import ORDERS, ahead_error, window_error

    name, _, arg = spec.partition("@")
    if name not in ORDERS:
        raise UserError(f"{flag}: unknown order {name!r}; choose one of {', '.join(ORDERS)}")
    if not arg:
        return {"order": name}
    if arg.startswith("w"):
        if not (arg[1:].isdigit() and int(arg[1:]) >= 1):
            raise UserError(f"{flag}: {full!r}: a window is NAME@wW with an integer W >= 1")
        if (err := window_error(name, int(arg[1:]))) is not None:
            raise UserError(f"{flag}: {full!r}: {err}")
        return {"order": name, "window": int(arg[1:])}
    if arg.startswith("d"):
        try:
            ahead = float(arg[1:])
        except ValueError:
            raise UserError(f"{flag}: {full!r}: an ahead penalty is NAME@dλ with a number λ >= 0") from None
        if (err := ahead_error(name, ahead)) is not None:
            raise UserError(f"{flag}: {full!r}: {err}")
        return {"order": name, "ahead_penalty": ahead}
    try:
        value = float(arg)
    except ValueError:
        raise UserError(f"{flag}: {full!r}: expected NAME@N (positions per step) or NAME@P (threshold in "
                        "(0, 1))") from None
    if not math.isfinite(value):
        raise UserError(f"{flag}: {full!r}: N and P must be finite numbers")
    if 0 < value < 1:
        return {"order": name, "threshold": value}
    if value >= 1 and value == int(value):
        return {"order": name, "k_per_step": int(value)}
    raise UserError(f"{flag}: {full!r}: N must be an integer >= 1 or P a threshold in (0, 1)")


# --- the command -------------------------------------------------------------------------------------------------

def trace_lines(run: DecodeRun, piece: Callable[[int], str]) -> str:
    """JSONL: per input line, the target positions filled at each step (0-based target indices), and each slot's
    piece (``piece``: token id -> sentencepiece piece) and log-probability when it was (last) filled, in position
    order — what a slot held and how sure the model was (an empty slot shows as the empty token's piece)."""
    rows = [{"line": i + 1, "order": run.order, "length": len(h.tokens), "steps": h.trace, "hyp": text,
             "pieces": [piece(t) for t in h.tokens], "logprobs": [round(float(lp), 4) for lp in h.token_logprobs]}
            for i, (h, text) in enumerate(zip(run.hypotheses, run.hyps))]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def read_inputs(input: str | None, split: str | None, data: str | None, ref: str | None, tr: Translator | None,
                limit: int, text: list[str] | None = None) -> tuple[list[str], list[str] | None, str]:
    """(sources, references or None, description) from --input/--ref (``-``: stdin), --text or --split."""
    from plmgen.data.splits import load_pairs
    from plmgen.data.userdata import read_lines

    if sum(x is not None for x in (input, split, text)) != 1:
        raise UserError('give exactly one of --input FILE (- for stdin), --text "..." or --split {train,dev,test}')
    if input is not None or text is not None:
        what = "--text" if text is not None else "<stdin>" if input == "-" else input
        sources = list(text) if text is not None else read_lines(input)
        for i, s in enumerate(sources, start=1):
            if not s.strip():
                raise UserError(f"{what}:{i}: empty source line (every line needs text to translate)")
        refs = None
        if ref is not None:
            if ref == "-" and input == "-":
                raise UserError("--input - and --ref - cannot both read stdin")
            refs = read_lines(ref)
            if len(refs) != len(sources):
                raise UserError(f"counts differ: {what} has {len(sources)} segments but --ref {ref} has {len(refs)}")
    else:
        folder = data or tr.config.data.path
        pairs = load_pairs(folder, split)
        sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
        if ref is not None:
            raise UserError("--ref goes with --input; --split takes the references from the data folder")
        what = f"{folder} {split}"
    if not sources:
        raise UserError(f"{what}: no source lines")
    if limit:
        sources, refs = sources[:limit], None if refs is None else refs[:limit]
    return sources, refs, what


def generate(*, checkpoint: str, input: str | None = None, text: list[str] | None = None, split: str | None = None,
             data: str | None = None, ref: str | None = None, order: str = "l2r", length: str = "predict",
             length_beam: int = 1, beam: int = 1, refine_iters: int = 0, sample: bool = False,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, out: str | None = None,
             trace: str | None = None, evaluate: bool = False, orders: str | None = None, lengths: str | None = None,
             limit: int = 0, batch_size: int = 32, precision: str = "fp32", seed: int = 0, speculate: int | str = 0,
             device: str | None = None, quiet: bool = False, threads: int | None = None,
             workers: int = 1, empty_last: bool = True) -> list[DecodeRun]:
    """Generate translations with a fine-tuned seq2seq checkpoint (any decoding order).

    Args:
        checkpoint: a seq2seq or prefix-lm checkpoint (runs/<name>/checkpoints/*.ckpt); prefix-lm decodes left to
            right (--order l2r) until </s> (--length predict) or for exactly --length N / oracle tokens.
        input: source file, one segment per line; - reads standard input (or use --text or --split).
        text: a sentence to translate (repeat --text for several); the translations go to stdout or --out.
        split: translate this split (train, dev, test) of the data folder; references come with it.
        data: data folder for --split (default: the one the checkpoint was trained on).
        ref: references for --input / --text (needed by --evaluate and --length oracle).
        order: decoding order: l2r, r2l, random, middle-out, balanced-tree, confidence, anchored, entropy, margin,
            parallel, threshold; NAME@N fills N positions per step, NAME@P uses a confidence threshold P, NAME@wW lets
            an adaptive order choose among the W leftmost open positions only, NAME@dλ takes λ off a slot's score
            per open slot between it and the decided text on its left; +beamB: beam B for that entry.
        length: target length: predict (length head), oracle (reference length) or a fixed N.
        length_beam: with --length predict: decode the top-N lengths, keep the best per-token log-probability.
        beam: beam size over (position, token) pairs (1 = greedy).
        refine_iters: mask-predict refinement iterations after the fill.
        sample: sample tokens instead of taking the argmax (seeded by --seed).
        temperature: sampling temperature (0 = greedy).
        top_k: sample among the k most likely tokens (0 = all).
        top_p: nucleus sampling: the smallest set of tokens whose probability reaches p (1 = all).
        out: hypotheses file (default: stdout); with --orders, a folder for every run's files, table and plots.
        trace: JSONL of the slots filled per step and each slot's piece and log-prob (--orders: one per run).
        evaluate: print sacrebleu BLEU and chrF against the references, with signatures.
        orders: comma-separated order specs to compare (writes a markdown table and PNG plots).
        lengths: comma-separated length modes for --orders (default: --length), e.g. predict,oracle.
        limit: only the first N sources (0 = all).
        batch_size: sources decoded together.
        precision: fp32 or bf16 (bfloat16 autocast: the fast path on CPUs with AMX).
        seed: seed of random orders / sampling.
        speculate: K drafts per pass (0 = off) or treeD[:A+B], a draft tree D deep with A best slots + B tokens per
            neighbour slot under each node (greedy; 2+2); output as --speculate 0 (sampling: same law); no --beam.
        device: where to decode: cpu, cuda, cuda:N (default: CUDA when available); bf16 autocasts on its type.
        quiet: no progress bar.
        threads: torch CPU threads (default: one per usable core; try 1 when other jobs keep the cores busy).
        workers: --orders on a CPU: N runs at once in N processes of threads/N threads each (same outputs).
        empty_last: empty-slot checkpoints: adaptive orders decide empty-argmax slots last (false: plain score).
    """
    specs, labels, modes = _grid_flags(order, orders, length, lengths)
    _check_flags(length_beam, beam, batch_size, limit, refine_iters, temperature, top_p, precision, orders, out,
                 workers)  # flags first: a typo must not cost a checkpoint load
    spec = parse_speculate(speculate)
    n_threads = setup_threads(threads)
    tr = load_translator(checkpoint, resolve_device(device))
    sources, refs, ref_ids, max_len = _encoded_inputs(tr, modes, input, text, split, data, ref, limit, evaluate)
    jobs = _jobs(specs, labels, modes, length_beam, batch_size, beam=beam, refine_iters=refine_iters, seed=seed,
                 max_len=max_len, sample=sample, temperature=temperature, top_k=top_k, top_p=top_p, **spec,
                 bf16=parse_precision(precision, "--precision") == "bf16", empty_last=empty_last)
    runs = _run_jobs(tr, checkpoint, jobs, sources, ref_ids, min(workers, len(jobs)), n_threads, quiet)
    _write_outputs(runs, refs, out, trace, evaluate, bool(orders), quiet, tr.tokenizer.id_to_piece)
    return runs


def _jobs(specs: list[dict], labels: list[str], modes: list, length_beam: int, batch_size: int,
          **decode_kw) -> list[tuple[TranslateConfig, str, str]]:
    """One (config, order label, description) per order spec × length mode."""
    return [(TranslateConfig(decode=DecodeConfig(**{**decode_kw, **s}), length=m.label, length_beam=length_beam,
                             batch_size=batch_size), label, f"{label} ({m.label})")
            for s, label in zip(specs, labels) for m in modes]


def _run_jobs(tr: Translator, checkpoint: str, jobs: list, sources, ref_ids, workers: int, n_threads: int,
              quiet: bool) -> list[DecodeRun]:
    """The grid's runs in this process (one progress display), or in ``workers`` processes on the CPU."""
    from rich.console import Console

    console = Console(stderr=True, quiet=quiet)
    if workers <= 1:
        return _run_grid(tr, sources, ref_ids, jobs, console, quiet)
    if tr.device.type != "cpu":
        raise UserError(f"--workers {workers} is for decoding on the CPU (device {tr.device}): use --workers 1")
    from plmgen.decoding.workers import run_in_workers

    each = max(1, n_threads // workers)
    if not quiet:
        console.print(f"decoding {len(jobs)} runs in {workers} processes, {each} threads each")
    return run_in_workers(tr, checkpoint, jobs, sources, ref_ids, workers, each, console.print)


def _grid_flags(order: str, orders: str | None, length: str, lengths: str | None) -> tuple[list[dict], list[str], list]:
    """--order/--orders and --length/--lengths -> (DecodeConfig fields per order, order labels, length modes)."""
    specs = [parse_order_spec(s, "--orders") for s in orders.split(",")] if orders else [parse_order_spec(order)]
    labels = [s.strip() for s in orders.split(",")] if orders else [order]
    modes = [parse_length_mode(m, "--lengths") for m in lengths.split(",")] if lengths else [parse_length_mode(length)]
    return specs, labels, modes


def _check_flags(length_beam, beam, batch_size, limit, refine_iters, temperature, top_p, precision, orders,
                 out, workers) -> None:
    """The number, precision and --orders flags, in the order the command has always checked them."""
    for name, v, lo, hi in (("--length_beam", length_beam, 1, MAX_LENGTH_BEAM), ("--beam", beam, 1, MAX_BEAM),
                            ("--batch_size", batch_size, 1, MAX_BATCH), ("--limit", limit, 0, None),
                            ("--refine_iters", refine_iters, 0, 100), ("--workers", workers, 1, None)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            raise UserError(f"{name} must be an integer in [{lo}, {hi if hi is not None else 'inf'}], got {v!r}")
    for name, v in (("--temperature", temperature), ("--top_p", top_p)):
        if not math.isfinite(v):
            raise UserError(f"{name} must be a finite number, got {v!r}")
    parse_precision(precision, "--precision")
    if orders and out is None:
        raise UserError("--orders needs --out FOLDER for its hypotheses, table and plots")


def _encoded_inputs(tr: Translator, modes: list, input, text, split, data, ref, limit: int, evaluate: bool):
    """Read and tokenize the sources (and references) -> (sources, refs, reference ids for --length oracle or None,
    the longest target any length mode can ask for)."""
    longest = MAX_LENGTH_FACTOR * tr.config.data.seq_len
    for m in modes:
        if m.kind == "fixed" and m.n > longest:
            raise UserError(f"--length {m.n} is over the limit of {longest} for this checkpoint "
                            f"({MAX_LENGTH_FACTOR} x its training seq_len {tr.config.data.seq_len})")
    texts, refs, what = read_inputs(input, split, data, ref, tr, limit, text)
    needs_refs = evaluate or any(m.kind == "oracle" for m in modes)
    if needs_refs and refs is None:
        raise UserError("--evaluate and --length oracle need references: use --split, or --input with --ref")
    sources = tr.tokenizer.encode_batch(texts)
    for i, s in enumerate(sources, start=1):
        if not s:
            raise UserError(f"{what}:{i}: the source tokenizes to nothing")
    ref_ids = tr.tokenizer.encode_batch(refs) if refs is not None and any(m.kind == "oracle" for m in modes) else None
    return sources, refs, ref_ids, length_cap(tr, modes, ref_ids)


def length_cap(tr: Translator, modes: list, ref_ids: list[list[int]] | None = None) -> int:
    """The longest target any of ``modes`` can ask for (``DecodeConfig.max_len``): the length head's largest class
    (1 without a head), a fixed length, or the longest oracle reference in ``ref_ids``."""
    head = tr.length_head
    return max([head.max_len if head is not None else 1] + [m.n for m in modes] + [len(r) for r in ref_ids or []])


def _run_grid(tr: Translator, sources, ref_ids, jobs: list[tuple[TranslateConfig, str, str]], console,
              quiet: bool) -> list[DecodeRun]:
    """One ``translate`` run per (config, label, description) in ``jobs``, under one progress display."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from plmgen.progress import make_progress
    from plmgen.threads import say_threads

    if not quiet:
        say_threads()
    runs: list[DecodeRun] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with make_progress(console, quiet, columns) as progress:  # plain lines when stderr is not a terminal
        for cfg, label, desc in jobs:
            runs.append(translate(tr, sources, cfg, ref_ids, progress, label=label, desc=desc))
    return runs


def _write_outputs(runs: list[DecodeRun], refs, out, trace, evaluate: bool, grid: bool, quiet: bool,
                   piece: Callable[[int], str]) -> None:
    from rich.console import Console

    from plmgen.evaluation import corpus_scores

    console = Console(stderr=True, quiet=quiet)

    if not grid:
        run = runs[0]
        text = "".join(h + "\n" for h in run.hyps)
        if out:
            atomic_write_text(out, text)
        else:
            print(text, end="")
        if trace:
            atomic_write_text(trace, trace_lines(run, piece))
        if evaluate:
            s = corpus_scores(run.hyps, refs)
            for line in s.lines():
                print(line)
        return
    folder = Path(out)
    rows = []
    for run in runs:
        tag = f"{run.order}.{run.length}".replace("/", "_")
        atomic_write_text(folder / f"{tag}.txt", "".join(h + "\n" for h in run.hyps))
        atomic_write_text(folder / f"{tag}.trace.jsonl", trace_lines(run, piece))
        row = {"order": run.order, "length": run.length, "BLEU": math.nan, "chrF": math.nan, "rep %": math.nan,
               "⁇ %": math.nan, "steps": run.steps, "tokens/s": run.tokens / max(run.seconds, 1e-9)}
        if refs is not None:
            s = corpus_scores(run.hyps, refs)
            row.update({"BLEU": s.bleu, "chrF": s.chrf, "rep %": s.repetition, "⁇ %": s.unk})
            row["scores"] = s
        rows.append(row)
    write_grid_report(rows, runs, folder)
    console.print(f"wrote {folder / 'orders.md'}, order_heatmap.png, bleu_vs_steps.png")
    if evaluate or refs is not None:
        print((folder / "orders.md").read_text(encoding="utf-8"), end="")


def write_grid_report(rows: list[dict], runs: list[DecodeRun], folder: Path) -> None:
    """orders.md (order × length: BLEU, chrF, % of hypotheses with an immediately repeated word, % with ` ⁇ `,
    steps, tokens/s + both sacrebleu signatures) and the two PNG plots."""
    from plmgen.evaluation import markdown_table
    from plmgen.plots import bleu_vs_steps, order_heatmap

    cols = ["order", "length", "BLEU", "chrF", "rep %", "⁇ %", "steps", "tokens/s"]
    scored = next((r["scores"] for r in rows if "scores" in r), None)
    text = markdown_table(rows, cols) + ("".join(f"\n{line}" for line in scored.signature_lines()) + "\n"
                                         if scored else "")
    atomic_write_text(folder / "orders.md", text)
    first_mode = runs[0].length
    by_order = {r.order: [{"length": len(h.tokens), "steps": h.trace} for h in r.hypotheses]
                for r in runs if r.length == first_mode}
    order_heatmap(by_order, folder / "order_heatmap.png")
    if scored:
        bleu_vs_steps([r for r in rows if not math.isnan(r["BLEU"])], folder / "bleu_vs_steps.png")
