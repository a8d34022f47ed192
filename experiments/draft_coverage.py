"""How far can a speculative draft see? Coverage of sequential confidence decoding's next choices by draft candidates.

    python experiments/draft_coverage.py --checkpoint runs/demo/finetune/checkpoints/last.ckpt --limit 150

Issue "lossless speculative any-order decoding" asks ≥ 2 tokens per forward pass for the confidence order. A pass
yields the choice c_t that the previous pass verified, plus every accepted draft; drafts for the states after c_t
can only be predicted from state S_t (c_t's own pass has not run). This script decodes the test split sequentially
(greedy, batch 1, predicted length, bf16) and, at every step t, asks whether the choice (position, token) made at
t + 1 is among a candidate set built from S_t's distributions — the k best-scored open positions with their argmax
token (a chain draft is k = 1) plus the n likeliest tokens at each neighbour of c_t — and, where it is, whether the
choice at t + 2 is among the same kind of set around both choices (depth 2: a draft tree). Expected tokens per pass
of such a tree ≈ 1 + coverage(depth 1) + coverage(depth 2); its query rows per pass ≈ nodes × open positions.
Writes a markdown table to stdout and, with ``--out F``, to F (atomically) with the provenance.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GRID = ((1, 0), (4, 0), (4, 4), (4, 16), (8, 32))  # (best-scored positions, tokens per neighbour of the choice)


def _candidates(logp, q_pos, q_ok, exclude: set[int], around: tuple[int, ...], k: int, n: int) -> set:
    """Draft candidates from one state's query rows: logp [Q, V] (banned ids at -inf), q_pos/q_ok [Q]."""
    conf, tok = logp.max(-1)
    rows = [q for q in range(q_pos.shape[0]) if q_ok[q] and int(q_pos[q]) not in exclude]
    best = sorted(rows, key=lambda q: -float(conf[q]))[:k]
    out = {(int(q_pos[q]), int(tok[q])) for q in best}
    for q in rows:
        if n and any(abs(int(q_pos[q]) - a) == 1 for a in around):
            out.update((int(q_pos[q]), int(v)) for v in logp[q].topk(n).indices)
    return out


def main(checkpoint: str, split: str = "test", limit: int = 150, out: str = "", data: str = "") -> None:
    """Args:
        checkpoint: a fine-tuned seq2seq checkpoint.
        split: the split to decode.
        limit: first N sentences (0 = all).
        out: also write the table and its provenance to this markdown file.
        data: data folder (default: the checkpoint's).
    """
    import torch

    from plmgen.config import DecodeConfig, TranslateConfig
    from plmgen.decoding.generate import read_inputs
    from plmgen.decoding.translate import load_translator, translate_batch
    from plmgen.files import atomic_write_text, sha256_file
    from plmgen.study.measure import environment

    tr = load_translator(checkpoint)
    tok = tr.tokenizer
    sources, _, _ = read_inputs(None, split, data or None, None, tr, limit)
    cfg = TranslateConfig(decode=DecodeConfig(order="confidence", bf16=True))
    banned = torch.tensor(tr.banned)
    hits = {g: [0, 0, 0, 0] for g in GRID}  # depth-1 hits, depth-2 hits, depth-1 candidates, steps
    for text in sources:
        steps = []

        def hook(logp, q_pos, q_ok):
            lp = logp[0].float().clone()
            lp[:, banned.to(lp.device)] = -float("inf")
            steps.append((lp, q_pos[0].clone(), q_ok[0].clone()))

        translate_batch(tr, [tok.encode(text)], cfg, on_step=hook)
        choice = [next(iter(_candidates(*s, set(), (), 1, 0))) for s in steps]
        for t in range(len(steps) - 2):
            c0, c1, c2 = choice[t : t + 3]
            for g in GRID:
                d1 = _candidates(*steps[t], {c0[0]}, (c0[0],), *g)
                hit1 = c1 in d1
                hits[g][0] += hit1
                hits[g][2] += len(d1)
                hits[g][3] += 1
                if hit1:
                    hits[g][1] += c2 in _candidates(*steps[t], {c0[0], c1[0]}, (c0[0], c1[0]), *g)
    lines = ["| best positions k | tokens per neighbour n | depth-1 coverage | depth-2 coverage | candidates per node "
             "| tokens per pass (tree of depth 2) |", "|---|---|---|---|---|---|"]
    for (k, n), (h1, h2, size, m) in hits.items():
        m = max(1, m)  # no step with two successors (one- or two-token outputs only)
        lines.append(f"| {k} | {n} | {h1 / m:.3f} | {h2 / m:.3f} | {size / m:.1f} | {1 + (h1 + h2) / m:.2f} |")
    table = "\n".join(lines)
    print(table)
    if out:
        env = environment()
        prov = (f"\n\nCheckpoint `{checkpoint}` (sha256 `{sha256_file(checkpoint)[:16]}…`), {split} split, first "
                f"{len(sources)} sentences, confidence order, greedy, bf16, batch 1, predicted length; "
                f"{sum(v[3] for v in hits.values()) // len(GRID)} steps. Commit `{env.get('git_commit', '?')[:10]}`, "
                f"command `{env.get('command', '')}`.\n")
        atomic_write_text(Path(out), "# Draft coverage (experiments/draft_coverage.py)\n\n" + table + prov)


if __name__ == "__main__":
    from plmgen.errors import run_cli

    sys.exit(run_cli(main, as_positional=False))
