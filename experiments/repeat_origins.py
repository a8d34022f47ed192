"""Where an order's repeated words are born: which copy was written later, and what was around it then.

    python experiments/repeat_origins.py --checkpoint runs/demo/finetune/checkpoints/last.ckpt \
        --orders l2r,confidence,entropy --out experiments/results/recipe/repeat_origins.md

Decodes a split (greedy, predicted length, bf16, batch 32: the demo's settings) and, for every output with an
immediately repeated word (``plmgen.evaluation.has_repeat``), finds the first repeated pair of words and asks:
- which copy was filled later (the *repeater*): the right one (what left-to-right decoding does) or the left one
  (written beside a copy of itself that was already there);
- what was filled around the repeater's first-filled piece at that time: both neighbours (a *gap fill*: the last
  slot between two decided parts), only the left, only the right, or neither (the target's ends count as filled);
- whether the two copies are adjacent slots or have empty slots between them.
The same neighbour classes over *all* fills give the base rate a repeater is compared with. A second table gives
each order's BLEU n-gram precisions (sacrebleu, against the split's references). A third asks the model itself:
given the whole output but one slot (``leave_one_out``), does its likeliest token there differ from the one
written — at the later copy's first-filled slot, at the earlier copy's, and at one random slot per output (the base
rate)? Writes the markdown tables to stdout and, with ``--out F``, to F (atomically) with the provenance.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = ("both", "left", "right", "none")


def neighbour_kinds(trace: Sequence[Sequence[int]], length: int) -> dict[int, str]:
    """Slot -> what was filled beside it when it was filled (``KINDS``; a slot past either end counts as filled)."""
    filled, kinds = set(), {}
    for step in trace:
        for p in step:
            left = p == 0 or p - 1 in filled
            right = p == length - 1 or p + 1 in filled
            kinds[p] = "both" if left and right else "left" if left else "right" if right else "none"
            filled.add(p)  # the fills of one step are ranked in order: a later one sees the earlier ones
    return kinds


def words_with_slots(tokens: Sequence[int], piece: Callable[[int], str], skip: set[int]) -> list[tuple[str, list[int]]]:
    """Target ids -> [(lower-cased word, its slots)], words split at sentencepiece's "▁"; ``skip`` ids (the empty
    token) are dropped as the detokenizer drops them."""
    words: list[tuple[str, list[int]]] = []
    for p, t in enumerate(tokens):
        if t in skip:
            continue
        s = piece(t)
        if s.startswith("\u2581") or not words:
            words.append((s.lstrip("\u2581").lower(), [p]))
        else:
            words[-1] = (words[-1][0] + s.lower(), words[-1][1] + [p])
    return words


def repeat_copies(tokens: Sequence[int], trace: Sequence[Sequence[int]], piece: Callable[[int], str],
                  skip: set[int]) -> tuple[int, int, bool] | None:
    """The first immediately repeated word of one output -> (the later-filled copy's first-filled slot, the
    earlier copy's, whether the copies are adjacent slots), or None when no word repeats."""
    rank = {p: r for r, step in enumerate(trace) for p in step}
    words = words_with_slots(tokens, piece, skip)
    for (a, sa), (b, sb) in zip(words, words[1:]):
        if a and a == b:
            first_a, first_b = min(sa, key=rank.__getitem__), min(sb, key=rank.__getitem__)
            later, earlier = (first_b, first_a) if rank[first_b] > rank[first_a] else (first_a, first_b)
            return later, earlier, sb[0] == sa[-1] + 1
    return None


def repeat_origin(tokens: Sequence[int], trace: Sequence[Sequence[int]], piece: Callable[[int], str],
                  skip: set[int]) -> tuple[str, str, str] | None:
    """The first immediately repeated word of one output -> (which copy was later, the repeater's neighbour kind,
    "adjacent" | "across empty"), or None when no word repeats."""
    copies = repeat_copies(tokens, trace, piece, skip)
    return None if copies is None else origin_of(copies, trace, len(tokens))


def origin_of(copies: tuple[int, int, bool], trace: Sequence[Sequence[int]], length: int) -> tuple[str, str, str]:
    """``repeat_copies``' answer -> ``repeat_origin``'s."""
    later, earlier, adjacent = copies
    which = "right copy later" if later > earlier else "left copy later"
    return which, neighbour_kinds(trace, length)[later], "adjacent" if adjacent else "across empty"


def leave_one_out(model, layout, tokens, slots):
    """Log-probs [N, V] of each row's target slot ``slots`` [N] given every *other* target token of ``tokens``
    [N, L] (rows laid out by ``layout``, a ``DecodeLayout``): the slot is the only open one, the rest is context,
    so no content state has seen the slot's own token."""
    import torch

    from plmgen.decoding.cache import OPEN_RANK, full_forward

    rank = torch.full(tokens.shape, -1, dtype=torch.long, device=tokens.device)
    q = slots[:, None]
    rank.scatter_(1, q, OPEN_RANK)
    return full_forward(model, layout, tokens, rank, q, torch.ones_like(q, dtype=torch.bool))[:, 0]


def rejection_rates(tr, sources, outputs, probes, batch: int = 64) -> dict[str, float]:
    """probes: [(kind, output index, slot)] -> {kind: % of probes whose leave-one-out argmax (the tokenizer's
    specials banned, as the decoder always bans them) differs from the token written there}."""
    import torch

    from plmgen.config import DecodeConfig
    from plmgen.decoding.cache import build_layout

    tok, out, n = tr.tokenizer, Counter(), Counter()
    for i in range(0, len(probes), batch):
        part = probes[i: i + batch]
        rows = [outputs[j] for _, j, _ in part]
        layout = build_layout(tr.model, [sources[j] for _, j, _ in part], [len(r) for r in rows], tok.sep_id,
                              tok.pad_id, DecodeConfig().max_segment, end_id=tr.end_id)
        tokens = torch.full((len(rows), max(map(len, rows))), tok.pad_id, dtype=torch.long, device=tr.device)
        for b, r in enumerate(rows):
            tokens[b, : len(r)] = torch.tensor(r)
        slots = torch.tensor([s for _, _, s in part], device=tr.device)
        with torch.no_grad(), torch.autocast(tr.device.type, torch.bfloat16):
            lp = leave_one_out(tr.model, layout, tokens, slots).float()
        lp[:, tr.banned] = float("-inf")
        differs = lp.argmax(-1) != tokens.gather(1, slots[:, None])[:, 0]
        for (kind, _, _), d in zip(part, differs.tolist()):
            n[kind] += 1
            out[kind] += d
    return {k: 100 * out[k] / n[k] for k in n}


def origins_table(per_order: dict[str, tuple[Counter, Counter, int, int]]) -> list[str]:
    """per order: (all fills by kind, repeaters by (which, kind, gap), outputs, outputs with a repeat) -> markdown."""
    lines = ["| order | outputs with a repeat | left copy later | repeater a gap fill (all fills) | repeater's "
             "left only / right only / neither (all fills) | across an empty slot |", "|---|---|---|---|---|---|"]
    for order, (fills, reps, n, n_rep) in per_order.items():
        total, r = max(1, sum(fills.values())), max(1, sum(reps.values()))
        kind = Counter()
        for (_, k, _), v in reps.items():
            kind[k] += v
        left_later = sum(v for (w, _, _), v in reps.items() if w == "left copy later")
        across = sum(v for (_, _, g), v in reps.items() if g == "across empty")
        pct = lambda c, d: f"{100 * c / d:.0f} %"  # noqa: E731
        others = " / ".join(f"{pct(kind[k], r)} ({pct(fills[k], total)})" for k in KINDS[1:])
        lines.append(f"| {order} | {n_rep} of {n} | {pct(left_later, r)} | {pct(kind['both'], r)} "
                     f"({pct(fills['both'], total)}) | {others} | {pct(across, r)} |")
    return lines


def precision_table(rows: dict[str, tuple[list[float], float, float, float]]) -> list[str]:
    """per order: (BLEU's 1-4-gram precisions, brevity penalty, BLEU, repeat %) -> markdown."""
    lines = ["| order | BLEU | 1 / 2 / 3 / 4-gram precision | brevity penalty | rep % |", "|---|---|---|---|---|"]
    for order, (prec, bp, bleu, rep) in rows.items():
        lines.append(f"| {order} | {bleu:.2f} | {' / '.join(f'{p:.1f}' for p in prec)} | {bp:.3f} | {rep:.2f} |")
    return lines


def loo_table(rows: dict[str, tuple[int, dict[str, float]]]) -> list[str]:
    """per order: (repeats probed, {probe kind: % rejected}) -> markdown."""
    kinds = ("later copy", "earlier copy", "a random slot")
    lines = ["| order | repeats probed | leave-one-out rejects the later copy | the earlier copy | a random slot |",
             "|---|---|---|---|---|"]
    for order, (n, rates) in rows.items():
        lines.append(f"| {order} | {n} | " + " | ".join(f"{rates.get(k, float('nan')):.0f} %" for k in kinds) + " |")
    return lines


def main(checkpoint: str, orders: str = "confidence", split: str = "test", limit: int = 0, out: str = "",
         data: str = "", batch_size: int = 32) -> None:
    """Args:
        checkpoint: a fine-tuned seq2seq checkpoint.
        orders: comma-separated decoding orders (``generate --orders`` specs).
        split: the split to decode.
        limit: first N sentences (0 = all).
        out: also write the table and its provenance to this markdown file.
        data: data folder (default: the checkpoint's).
        batch_size: sources per decoding batch.
    """
    from plmgen.config import DecodeConfig, TranslateConfig
    from plmgen.decoding.generate import length_cap, parse_order_spec, read_inputs
    from plmgen.decoding.translate import load_translator, translate
    from sacrebleu.metrics import BLEU

    from plmgen.evaluation import has_repeat, repetition_rate
    from plmgen.files import atomic_write_text, sha256_file
    from plmgen.length import parse_length_mode
    from plmgen.study.measure import environment

    tr = load_translator(checkpoint)
    tok = tr.tokenizer
    sources, refs, _ = read_inputs(None, split, data or None, None, tr, limit)
    ids = [tok.encode(s) for s in sources]
    skip = {tr.empty_id} if tr.empty_id is not None else set()
    per_order, prec, loo, cap = {}, {}, {}, length_cap(tr, [parse_length_mode("predict")])
    for spec in orders.split(","):
        dcfg = DecodeConfig(**parse_order_spec(spec, "--orders"), bf16=True, max_len=cap)
        run = translate(tr, ids, TranslateConfig(decode=dcfg, batch_size=batch_size))
        fills, reps, n_rep, probes, rng = Counter(), Counter(), 0, [], random.Random(0)
        for j, (text, h) in enumerate(zip(run.hyps, run.hypotheses)):
            fills.update(neighbour_kinds(h.trace, len(h.tokens)).values())
            probes.append(("a random slot", j, rng.randrange(len(h.tokens))))
            if has_repeat(text):
                n_rep += 1
                if (copies := repeat_copies(h.tokens, h.trace, tok.sp.id_to_piece, skip)) is not None:
                    reps[origin_of(copies, h.trace, len(h.tokens))] += 1
                    probes += [("later copy", j, copies[0]), ("earlier copy", j, copies[1])]
        per_order[spec] = (fills, reps, len(ids), n_rep)
        loo[spec] = (sum(reps.values()), rejection_rates(tr, ids, [h.tokens for h in run.hypotheses], probes))
        b = BLEU().corpus_score(run.hyps, [refs])
        prec[spec] = (b.precisions, b.bp, b.score, repetition_rate(run.hyps))
    table = "\n".join(origins_table(per_order) + [""] + precision_table(prec) + [""] + loo_table(loo))
    print(table)
    if out:
        env = environment()
        prov = (f"\n\nCheckpoint `{checkpoint}` (sha256 `{sha256_file(checkpoint)[:16]}…`), {split} split, "
                f"{len(ids)} sentences, greedy, bf16, predicted length, batch {batch_size}. Percentages of the "
                f"repeaters (in brackets: of all fills of that order). Commit `{env.get('git_commit', '?')[:10]}`, "
                f"command `{env.get('command', '')}`.\n")
        atomic_write_text(Path(out), "# Where repeated words are born (experiments/repeat_origins.py)\n\n" + table
                          + prov)


if __name__ == "__main__":
    from plmgen.errors import run_cli

    sys.exit(run_cli(main, as_positional=False))
