"""``python cli.py bench decode``: the incremental decoding cache against same-run references.

Random weights (a "small"-shaped XLNet: d_model 256, 6 layers), random sources — speed and exactness only; quality
needs a trained model (``parallel_rows`` takes a ``quality`` hook for that, e.g. BLEU on a dev slice).

Timings are medians of ``repeats`` (>= 5) runs alternating between the two sides of a comparison, after a warm-up
in the timed precision.

1. cache vs naive full recompute: the same greedy decode (l2r and confidence), identical tokens asserted
   -> ``ratio cache_vs_recompute: X`` (l2r) and ``... (confidence order)``.
2. l2r greedy tokens/s vs ``transformers`` XLNetLMHeadModel on the same weights, generating left to right the way
   its ``prepare_inputs_for_generation`` does (append a dummy token blocked by perm_mask, predict it through
   target_mapping, re-feed the last two tokens and reuse mems) -> ``ratio l2r_greedy_tokens_per_s_vs_hf: X``.
3. parallel decoding with k = 1, 2, 4 positions per step: steps taken.
4. with ``--checkpoint C``: speculative decoding (``--drafts``: chains of 2, 4, 8 drafts, and draft trees on request)
   against sequential greedy for l2r and confidence, at batch 1 and 32, on the first ``limit`` test
   sentences (predicted lengths): tokens per forward pass and the wall-clock ratio, identical outputs asserted ->
   ``ratio speculative_tokens_per_pass: X`` (the draft with the most, confidence order, batch 1) and
   ``ratio speculative_vs_sequential_wall: X`` (the fastest draft there). Also dev BLEU of parallel
   k = 1, 2, 4.

Reports go to ``runs/bench/decode.md`` (with a checkpoint: its run folder's ``bench/``); only ``--record`` also
rewrites ``experiments/results/bench_decode.md``. A plain run never changes tracked files.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from ..config import DecodeConfig, ModelConfig, parse_precision, parse_speculate, parse_speculate_list
from ..errors import UserError
from ..files import atomic_write_text
from ..decoding import decode
from ..decoding.search import inference
from ..decoding.translate import load_translator
from ..model import XLNet

SEP, PAD = 4, 5

# Draft settings of the speculative table, as ``--speculate`` takes them: chains of k drafts (draft trees,
# treeD:A+B[/R], through ``--drafts``: on a CPU each costs minutes per order and batch size).
DRAFTS = ("2", "4", "8")


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def alternating(fns: list[Callable], repeats: int) -> tuple[list, list[float]]:
    """Run fns[0], fns[1], … in turn, ``repeats`` rounds -> (each fn's last output, each fn's median seconds)."""
    outs, secs = [None] * len(fns), [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            outs[i], t = _timed(fn)
            secs[i].append(t)
    return outs, [statistics.median(t) for t in secs]


def hf_l2r_greedy(hf, src: torch.Tensor, length: int, bf16: bool = False) -> torch.Tensor:
    """HF XLNet left-to-right greedy with mems, as in its prepare_inputs_for_generation (offset 2).

    src [B, C] already ends with <sep>; token_type_ids mark the generated part as segment 1 like plmgen's layout.
    Returns generated ids [B, length]."""
    B, C = src.shape
    seq, mems, offset = src, None, 2
    dev = src.device
    dummy = torch.zeros(B, 1, dtype=torch.long, device=dev)
    with inference(bf16, dev):  # the same gradient-free / autocast context as plmgen's decoder
        for _ in range(length):
            start = 0 if mems is None else seq.shape[1] - offset
            inp = torch.cat([seq[:, start:], dummy], dim=1)
            n = inp.shape[1]
            perm = torch.zeros(B, n, n, device=dev)
            perm[:, :, -1] = 1.0
            tmap = torch.zeros(B, 1, n, device=dev)
            tmap[:, 0, -1] = 1.0
            pos = torch.arange(start, start + n, device=dev)
            tt = (pos >= C).long()[None].expand(B, n)
            past = None if mems is None else [m[:-offset] for m in mems]
            out = hf(input_ids=inp, perm_mask=perm, target_mapping=tmap, token_type_ids=tt, mems=past, use_mems=True)
            mems = out.mems
            seq = torch.cat([seq, out.logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[:, C:]


def l2r_vs_hf(model, twin, fixed: list[list[int]], length: int, bf16: bool, repeats: int = 5) -> dict:
    """Left-to-right greedy tokens/s of plmgen's cache and of transformers' XLNet (``hf_l2r_greedy``) on the same
    weights and sources, both under the same precision context (``inference``); medians of alternating repeats."""
    batch, lens = len(fixed), [length] * len(fixed)
    ids = torch.tensor([s + [SEP] for s in fixed], device=next(model.parameters()).device)
    hf_l2r_greedy(twin, ids[:2], 2, bf16)  # warm-up
    decode(model, fixed[:2], [2, 2], DecodeConfig(bf16=bf16, max_len=length), sep_id=SEP, pad_id=PAD)
    (hf_out, ours), (t_hf, t_us) = alternating(
        [lambda: hf_l2r_greedy(twin, ids, length, bf16),
         lambda: decode(model, fixed, lens, DecodeConfig(bf16=bf16, max_len=length), sep_id=SEP, pad_id=PAD)],
        repeats)
    # HF's scheme lets the last tokens see each other, so only the first token (context only) must agree.
    first_agree = sum(int(h.tokens[0] == int(hf_out[b, 0])) for b, h in enumerate(ours)) / batch
    tps_hf, tps_us = batch * length / t_hf, batch * length / t_us
    return dict(hf=tps_hf, ours=tps_us, ratio=tps_us / tps_hf, first_agree=first_agree)


def parallel_rows(model, src, lens, ks=(1, 2, 4), quality: Callable | None = None, bf16: bool = False) -> list[dict]:
    """Confidence order with k positions per step: steps, seconds and (with ``quality(hyps) -> float``) quality."""
    rows = []
    for k in ks:
        cfg = DecodeConfig(order="parallel", k_per_step=k, max_len=max(lens), bf16=bf16)
        hyps, sec = _timed(lambda: decode(model, src, lens, cfg, sep_id=SEP, pad_id=PAD))
        row = {"k": k, "mean_steps": sum(h.steps for h in hyps) / len(hyps), "seconds": sec}
        if quality is not None:
            row["quality"] = quality(hyps)
        rows.append(row)
    return rows


def run(batch: int = 32, steps: int = 64, src_len: int = 32, d_model: int = 256, n_layer: int = 6,
        vocab_size: int = 8000, seed: int = 0, hf: bool = True, precision: str = "bf16",
        out: str | None = None, checkpoint: str | None = None, dev_limit: int = 200, limit: int = 100,
        repeats: int = 5, record: bool = False, device: str = "cpu", drafts: str = ",".join(DRAFTS)) -> dict:
    """Run the decoding benchmark and write a markdown report to ``out``.

    Args:
        batch: sources decoded together.
        steps: target length = decoding steps (fixed; 3 for a quick smoke run).
        src_len: longest source (lengths vary in [src_len/2, src_len] for the cache-vs-recompute part).
        d_model: model width; n_layer: layers (random weights).
        vocab_size: vocabulary size.
        seed: weights and data seed.
        hf: also time transformers' XLNet on the same weights.
        precision: "bf16" (bfloat16 autocast, the CPU fast path; the default) or "fp32", for both sides of every
            comparison. The l2r-vs-transformers ratio is printed for the other precision too.
        out: markdown report path (default: runs/bench/decode.md, with a checkpoint its run folder's bench/).
        checkpoint: a fine-tuned seq2seq checkpoint: the speculative table and BLEU of parallel k=1,2,4.
        dev_limit: dev sentences for that BLEU.
        limit: test sentences for the speculative table (0 = the whole split).
        repeats: timed runs per side (medians, alternating sides), at least 5 for the headline numbers.
        record: also rewrite experiments/results/bench_decode.md.
        drafts: the speculative table's --speculate values (K: a chain; trees such as tree1:4+4 cost minutes).
        device: where the random-weight models run (cpu or cuda; bf16 autocast is the CPU path, use fp32 on cuda).
    """
    precision = parse_precision(precision, "--precision")
    if not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"--repeats must be an int >= 1, got {repeats!r}")
    bf16 = precision == "bf16"
    specs = parse_speculate_list(drafts, "--drafts")  # a bad one fails now, not after minutes of benchmarks
    tgt_len = steps
    tr = load_translator(checkpoint) if checkpoint else None  # a bad checkpoint fails now, not minutes later
    model, src, gen = _random_model_and_sources(batch, src_len, d_model, n_layer, vocab_size, seed, device)
    lens = [tgt_len] * batch
    res: dict = {"config": f"d_model {d_model}, {n_layer} layers, vocab {vocab_size}, random weights; batch {batch}, "
                           f"source {src_len // 2}-{src_len} tokens, target {tgt_len}, "
                           f"{'bf16 autocast' if bf16 else 'fp32'}, torch {torch.__version__}, "
                           f"{torch.get_num_threads()} threads, {device}"}
    lines = _cache_vs_recompute(model, src, lens, tgt_len, bf16, repeats, res)
    # Sources of exactly src_len tokens for the transformers comparison, drawn after the others (same stream).
    fixed = [torch.randint(10, vocab_size, (src_len,), generator=gen).tolist() for _ in range(batch)] if hf else []
    hf_lines = _vs_transformers(model, fixed, tgt_len, precision, repeats, device, res) if hf else []
    prow = parallel_rows(model, src, lens, ks=[k for k in (1, 2, 4) if k <= tgt_len], bf16=bf16)
    res["parallel"] = prow
    for r in prow:
        print(f"parallel k={r['k']}: mean steps {r['mean_steps']:.1f} ({r['seconds']:.2f} s)")

    spec_md = speculative_table(tr, checkpoint, limit, precision, repeats, res, specs) if checkpoint else []
    bleu_md = dev_bleu_rows(checkpoint, dev_limit, [r["k"] for r in prow], precision) if checkpoint else []
    md = _report(res, repeats, lines, hf_lines, prow, bleu_md, spec_md, src_len, precision)
    run_dir = Path(checkpoint).resolve().parent.parent if checkpoint else Path("runs")
    path = Path(out) if out else run_dir / "bench" / "decode.md"
    atomic_write_text(path, "\n".join(md))
    print(f"wrote {path}")
    if record:
        atomic_write_text(RESULTS, "\n".join(md))
        print(f"wrote {RESULTS}")
    return res


def _random_model_and_sources(batch: int, src_len: int, d_model: int, n_layer: int, vocab_size: int, seed: int,
                              device) -> tuple[XLNet, list[list[int]], torch.Generator]:
    """A random-weight model (seeded), ``batch`` sources of src_len/2..src_len tokens, and the generator that drew
    them (the transformers comparison draws its sources from it next)."""
    torch.manual_seed(seed)
    mcfg = ModelConfig.named("small", d_model=d_model, n_layer=n_layer, vocab_size=vocab_size, dropout=0.0,
                             dropatt=0.0, mem_len=0)
    model = XLNet(mcfg).to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(src_len // 2, src_len + 1, (batch,), generator=gen).tolist()
    src = [torch.randint(10, vocab_size, (n,), generator=gen).tolist() for n in lengths]
    return model, src, gen


def _cache_vs_recompute(model, src, lens, tgt_len: int, bf16: bool, repeats: int, res: dict) -> list[str]:
    """Time the incremental cache against naive full recompute (l2r and confidence greedy, outputs must be
    identical); records the seconds and the l2r ratio in ``res``, returns the report's table rows."""
    lines = []
    for b in ("cache", "recompute"):  # warm-up in the timed precision
        decode(model, src[:2], [4, 4], DecodeConfig(bf16=bf16, backend=b), sep_id=SEP, pad_id=PAD)
    for order in ("l2r", "confidence"):
        cfgs = {b: DecodeConfig(order=order, backend=b, bf16=bf16, max_len=tgt_len) for b in ("cache", "recompute")}
        (hc, hr), (tc, tr) = alternating([lambda: decode(model, src, lens, cfgs["cache"], sep_id=SEP, pad_id=PAD),
                                          lambda: decode(model, src, lens, cfgs["recompute"], sep_id=SEP, pad_id=PAD)],
                                         repeats)
        if [h.tokens for h in hc] != [h.tokens for h in hr]:
            raise AssertionError(f"{order}: cache and recompute decoded different tokens")
        res[f"cache_s_{order}"], res[f"recompute_s_{order}"] = tc, tr
        lines.append(f"| {order} greedy | {tc:.2f} | {tr:.2f} | {tr / tc:.1f} | identical |")
    res["ratio_cache_vs_recompute"] = res["recompute_s_l2r"] / res["cache_s_l2r"]
    print(f"ratio cache_vs_recompute: {res['ratio_cache_vs_recompute']:.1f} (l2r greedy, vs naive full recompute)")
    print(f"ratio cache_vs_recompute (confidence order): {res['recompute_s_confidence'] / res['cache_s_confidence']:.1f}"
          " (vs naive full recompute)")
    return lines


def _vs_transformers(model, fixed, tgt_len: int, precision: str, repeats: int, device, res: dict) -> list[str]:
    """l2r greedy tokens/s against transformers' XLNet on the same weights, in both precisions (the headline one
    first); records them in ``res``, returns the report's table rows."""
    from ..hf import save_hf_xlnet
    from transformers import XLNetLMHeadModel

    with tempfile.TemporaryDirectory() as d:
        save_hf_xlnet(model, d)
        twin = XLNetLMHeadModel.from_pretrained(d).to(device).eval()
    hf_lines = []
    # The headline precision first, then the other one, so both ratios are on record from the same run.
    for p in (precision, *(q for q in ("bf16", "fp32") if q != precision)):
        r = l2r_vs_hf(model, twin, fixed, tgt_len, p == "bf16", repeats)
        label = "" if p == precision else f" ({p})"
        print(f"ratio l2r_greedy_tokens_per_s_vs_hf{label}: {r['ratio']:.1f}")
        res[f"l2r_vs_hf_{p}"] = r
        hf_lines += [f"| {p} | {r['ours']:.0f} | {r['hf']:.0f} | {r['ratio']:.1f} | {r['first_agree']:.0%} |"]
    res["ratio_l2r_vs_hf"] = res[f"l2r_vs_hf_{precision}"]["ratio"]
    return hf_lines


def _report(res: dict, repeats: int, lines, hf_lines, prow, bleu_md, spec_md, src_len: int,
            precision: str) -> list[str]:
    """The markdown report's lines."""
    md = ["# Decoding benchmark (`python cli.py bench decode`)", "", res["config"], "",
          f"Medians of {repeats} alternating repeats after a warm-up in the timed precision.", "",
          "## Incremental cache vs naive full recompute (same run, same weights)", "",
          "| decode | cache s | recompute s | ratio | outputs |", "|---|---|---|---|---|", *lines, "",
          f"ratio cache_vs_recompute: {res['ratio_cache_vs_recompute']:.1f} (l2r greedy, vs naive full recompute)", ""]
    if hf_lines:
        md += ["## Left-to-right greedy tokens/s vs transformers (same weights, sources of "
               f"{src_len} tokens)", "", "transformers: XLNetLMHeadModel with mems, fed the way its "
               "`prepare_inputs_for_generation` does (a dummy token blocked by perm_mask, the last two tokens "
               "re-fed); both sides under the same precision context.", "",
               "| precision | plmgen cache tok/s | transformers tok/s | ratio | first token identical |",
               "|---|---|---|---|---|", *hf_lines, "",
               f"ratio l2r_greedy_tokens_per_s_vs_hf: {res['ratio_l2r_vs_hf']:.1f} ({precision})", "",
               "Later tokens differ by design: HF re-feeds the last two tokens, which then see each other.", ""]
    md += ["## Parallel decoding (confidence order, k positions per step)", "",
           "| k | mean steps | seconds |", "|---|---|---|",
           *[f"| {r['k']} | {r['mean_steps']:.1f} | {r['seconds']:.2f} |" for r in prow], "",
           *(bleu_md or ["BLEU per k needs a trained model: `python cli.py bench decode --checkpoint C`."]), "",
           *spec_md]
    return md


RESULTS = Path(__file__).resolve().parents[2] / "experiments" / "results" / "bench_decode.md"


def speculative_rows(tr, sources: list[list[int]], order: str, drafts=DRAFTS, batch: int = 1,
                     bf16: bool = False, repeats: int = 5) -> list[dict]:
    """Sequential greedy and each draft setting (``--speculate`` specs, e.g. ``DRAFTS``) for one order and batch
    size on token-id sources (predicted lengths): tokens per forward pass, median seconds (sequential and
    speculative alternating), identical outputs asserted (under bf16: outputs that differ must agree in fp32;
    ``bf16_flips`` counts them)."""
    from ..config import TranslateConfig
    from ..decoding.translate import translate

    def cfg(spec, low=bf16):
        return TranslateConfig(decode=DecodeConfig(order=order, bf16=low, **parse_speculate(spec)), batch_size=batch)

    translate(tr, sources[:2], cfg(drafts[0]))  # warm-up in the timed precision
    rows = []
    for name in drafts:
        (seq, spec), (t_seq, t_spec) = alternating([lambda: translate(tr, sources, cfg(0)),
                                                    lambda: translate(tr, sources, cfg(name))], repeats)
        differ = [i for i, (a, b) in enumerate(zip(seq.hypotheses, spec.hypotheses)) if a.tokens != b.tokens]
        if differ and bf16:  # bf16 rounding depends on the pass's row layout: near-ties can flip (as between batch
            sub = [sources[i] for i in differ]  # sizes of sequential decoding); the fp32 outputs must agree
            a, b = translate(tr, sub, cfg(0, False)), translate(tr, sub, cfg(name, False))
            if [h.tokens for h in a.hypotheses] == [h.tokens for h in b.hypotheses]:
                differ = []
        if differ:
            raise UserError(f"--speculate {name}, {order} order, batch {batch}: {len(differ)} outputs differ from "
                            "sequential greedy decoding")
        passes = sum(h.passes for h in spec.hypotheses)
        rows.append({"order": order, "batch": batch, "k": name, "tokens": spec.tokens, "passes": passes,
                     "tokens_per_pass": spec.tokens / max(passes, 1), "seq_s": t_seq, "spec_s": t_spec,
                     "wall_ratio": t_seq / t_spec,
                     "bf16_flips": sum(a.tokens != b.tokens for a, b in zip(seq.hypotheses, spec.hypotheses))})
    return rows


def speculative_table(tr, checkpoint: str, limit: int, precision: str, repeats: int, res: dict,
                      specs=DRAFTS) -> list[str]:
    """The speculative table (l2r and confidence, every draft of ``specs``, batch 1 and 32) on the test split of
    ``tr`` (loaded from ``checkpoint``); prints the two tracked ratios, returns markdown lines."""
    from ..decoding.generate import read_inputs

    texts, _, what = read_inputs(None, "test", None, None, tr, limit)
    sources = tr.tokenizer.encode_batch(texts)
    rows = [r for order in ("l2r", "confidence") for batch in (1, 32)
            for r in speculative_rows(tr, sources, order, specs, batch, precision == "bf16", repeats)]
    for r in rows:
        print(f"speculative {r['order']} batch {r['batch']} {r['k']}: {r['tokens_per_pass']:.2f} tokens/pass, "
              f"wall x{r['wall_ratio']:.2f} vs sequential (identical)")
    conf1 = [r for r in rows if r["order"] == "confidence" and r["batch"] == 1]
    best = max(conf1, key=lambda r: r["tokens_per_pass"])
    fastest = max(conf1, key=lambda r: r["wall_ratio"])
    res["speculative"], res["ratio_speculative_tokens_per_pass"] = rows, best["tokens_per_pass"]
    res["ratio_speculative_vs_sequential_wall"] = fastest["wall_ratio"]
    ratios = [f"ratio speculative_tokens_per_pass: {best['tokens_per_pass']:.2f} (confidence, {best['k']}, batch 1; "
              f"wall x{best['wall_ratio']:.2f})",
              f"ratio speculative_vs_sequential_wall: {fastest['wall_ratio']:.2f} (confidence, {fastest['k']}, "
              f"batch 1; {fastest['tokens_per_pass']:.2f} tokens/pass)"]
    print("\n".join(ratios))
    return ["## Speculative vs sequential greedy (identical outputs asserted)", "",
            f"`{checkpoint}`, {what}, {len(sources)} sentences, predicted lengths, {precision}; sequential tokens per "
            "pass = 1. Wall ratio = sequential seconds / speculative seconds (medians of alternating repeats). "
            "Draft = the `--speculate` value: `k` = a chain of k drafts; `treeD:A+B` = a draft tree D levels deep, "
            "A best-scored slots + B tokens per neighbour slot under each node. *bf16 flips*: outputs that differ "
            "from sequential decoding under bf16 and agree with it in fp32 (rounding near ties, which also flips "
            "between batch sizes of sequential decoding).", "",
            "| order | batch | draft | tokens/pass | sequential s | speculative s | wall ratio | bf16 flips |",
            "|---|---|---|---|---|---|---|---|",
            *[f"| {r['order']} | {r['batch']} | {r['k']} | {r['tokens_per_pass']:.2f} | {r['seq_s']:.2f} | "
              f"{r['spec_s']:.2f} | {r['wall_ratio']:.2f} | {r['bf16_flips']} |" for r in rows], "", *ratios, ""]


def dev_bleu_rows(checkpoint: str, limit: int, ks: list[int], precision: str = "fp32") -> list[str]:
    """BLEU of confidence-order parallel decoding (k per step) on the first ``limit`` dev sentences of a checkpoint's
    data, predicted lengths; prints one line per k and returns markdown lines."""
    from ..decoding.generate import generate, read_inputs
    from ..evaluation import corpus_scores

    _, refs, _ = read_inputs(None, "dev", None, None, load_translator(checkpoint), limit)
    with tempfile.TemporaryDirectory() as d:
        runs = generate(checkpoint=checkpoint, split="dev", orders=",".join(f"parallel@{k}" for k in ks), out=d,
                        limit=limit, quiet=True, precision=precision)
    md = ["", f"Fine-tuned `{checkpoint}`, first {len(refs)} dev sentences, predicted lengths, {precision}:", "",
          "| k | mean steps | BLEU | chrF |", "|---|---|---|---|"]
    for k, run in zip(ks, runs):
        s = corpus_scores(run.hyps, refs)
        print(f"parallel k={k} dev: mean steps {run.steps:.1f} BLEU {s.bleu:.2f} chrF {s.chrf:.2f}")
        md.append(f"| {k} | {run.steps:.1f} | {s.bleu:.2f} | {s.chrf:.2f} |")
    print("\n".join(s.signature_lines()))
    return md + ["", *s.signature_lines()]


if __name__ == "__main__":  # until the plmgen.benchmarks dispatcher exists: python -m plmgen.benchmarks.decode
    run()
