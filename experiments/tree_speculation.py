"""Tokens per forward pass and wall-clock ratio of speculative decoding (chains and draft trees), outputs checked.

    python experiments/tree_speculation.py --checkpoint runs/demo/finetune/checkpoints/last.ckpt \
        --specs 4,tree1:4+4,tree2:4+4 --order confidence --batch_size 1 --repeats 5 --device cuda --out DIR

Decodes the split sequentially (greedy, predicted length) and with each ``--speculate`` spec at the same batch size,
precision and device, alternating the two ``--repeats`` times (medians, after a warm-up), asserts token-for-token
identical outputs (``bench decode``'s ``speculative_rows``: under bf16 a difference must vanish in fp32), and
reports tokens per forward pass (the issue's ≥ 2.0 goal) and the wall-clock ratio sequential / speculative. With
``--repeats 1`` the seconds are single runs (no speed claim). Writes ``DIR/README.md`` (table + provenance) and
``DIR/results.json``; resumable: a spec whose record ``DIR/<spec>.json`` exists is not decoded again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(checkpoint: str, specs: str = "4,tree1:4+4,tree2:4+4", order: str = "confidence", split: str = "test",
         limit: int = 0, batch_size: int = 8, precision: str = "bf16", out: str = "runs/tree_speculation",
         repeats: int = 1, device: str | None = None, data: str | None = None) -> None:
    """Args:
        checkpoint: a fine-tuned seq2seq checkpoint.
        specs: comma-separated --speculate values (K = a chain of K drafts, treeD:A+B[/R] = a draft tree).
        order: decoding order.
        split: the split to decode.
        limit: first N sentences (0 = all).
        batch_size: sentences decoded together (the same for sequential and speculative decoding).
        precision: fp32 or bf16.
        out: folder for the records and the table.
        repeats: timed rounds, sequential and speculative alternating (medians); 1 = single runs.
        device: cpu, cuda, cuda:N (default: CUDA when available).
        data: data folder for --split (default: the checkpoint's).
    """
    from plmgen.benchmarks.decode import speculative_rows
    from plmgen.config import parse_precision, parse_speculate_list
    from plmgen.decoding.cache import model_device
    from plmgen.decoding.generate import read_inputs
    from plmgen.decoding.translate import load_translator
    from plmgen.errors import UserError
    from plmgen.files import atomic_write_text, sha256_file
    from plmgen.study.measure import environment

    names = parse_speculate_list(specs, "--specs")  # bad specs fail before the checkpoint loads
    bf16 = parse_precision(precision, "--precision") == "bf16"
    if not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"--repeats must be an int >= 1, got {repeats!r}")
    tr = load_translator(checkpoint, device)
    texts, _, what = read_inputs(None, split, data, None, tr, limit)
    sources = tr.tokenizer.encode_batch(texts)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:  # bench decode's rows (identical outputs asserted; bf16 differences re-checked in fp32)
        rec = folder / f"{name.replace(':', '_').replace('/', '_')}.json"
        if not rec.exists():
            row = speculative_rows(tr, sources, order, [name], batch_size, bf16, repeats)[0]
            atomic_write_text(rec, json.dumps(row, indent=1))
            print(f"{name}: {row['tokens_per_pass']:.3f} tokens/pass, {row['spec_s']:.2f} s vs sequential "
                  f"{row['seq_s']:.2f} s (x{row['wall_ratio']:.2f}), identical")
        rows.append(json.loads(rec.read_text(encoding="utf-8")))
    env = environment()
    lines = ["# Speculative decoding: tokens per forward pass (experiments/tree_speculation.py)", "",
             f"`{checkpoint}` (sha256 `{sha256_file(checkpoint)[:16]}…`), {what}, {len(sources)} sentences, "
             f"{order} order, greedy, predicted length, {precision}, batch {batch_size}, {model_device(tr.model)}; "
             f"every output identical to sequential greedy decoding ({rows[0]['tokens'] if rows else 0} tokens; "
             "*bf16 flips*: outputs that differ under bf16 rounding and agree in fp32). "
             f"Seconds: medians of {repeats} alternating runs (sequential, speculative) after a warm-up"
             f"{' (single runs: no speed claim)' if repeats == 1 else ''}; wall ratio = sequential / speculative.", "",
             "| --speculate | tokens/pass | passes | sequential s | speculative s | wall ratio | bf16 flips |",
             "|---|---|---|---|---|---|---|",
             *[f"| `{r['k']}` | {r['tokens_per_pass']:.3f} | {r['passes']} | {r['seq_s']:.2f} | "
               f"{r['spec_s']:.2f} | {r['wall_ratio']:.2f} | {r['bf16_flips']} |" for r in rows], "",
             f"Commit `{env.get('git_commit', '?')[:10]}`, command `{env.get('command', '')}`.", ""]
    atomic_write_text(folder / "README.md", "\n".join(lines))
    atomic_write_text(folder / "results.json", json.dumps({"rows": rows, "environment": env}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    from plmgen.errors import run_cli

    sys.exit(run_cli(main, as_positional=False))
