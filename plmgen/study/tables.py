"""The study's tables (markdown + JSON) from the finished cells: scores at the largest budget with paired tests
against the baseline row, learning curves over the budgets, compute per variant, and the provenance block."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from plmgen.files import atomic_write_text
from plmgen.files import sha256_file
from plmgen.study.measure import environment
from plmgen.study.spec import StudySpec
from plmgen.study.stats import fmt_p, mean_std, paired_tests, pm


def _rows(spec: StudySpec, records: list[dict]) -> dict[tuple[str, str, int], dict[int, dict]]:
    """(variant, order, budget) -> {seed: that order's eval record}."""
    rows: dict[tuple[str, str, int], dict[int, dict]] = {}
    for rec in records:
        for budget, evals in rec["evals"].items():
            for order, e in evals.items():
                rows.setdefault((rec["variant"], order, int(budget)), {})[rec["seed"]] = e
    return rows


def significance(spec: StudySpec, rows: dict, refs: list[str], baseline: tuple[str, str]) -> tuple[dict, dict]:
    """Paired tests of every row against the baseline row at the same budget, on the seed-pooled corpus."""
    bv, bo = baseline
    tests, sigs = {}, {}
    for budget in sorted({b for _, _, b in rows}):
        base = rows.get((bv, bo, budget))
        if not base:
            continue
        for key, seeds in rows.items():
            if key[2] != budget or key == (bv, bo, budget):
                continue
            common = sorted(set(seeds) & set(base))
            pooled_refs = [r for _ in common for r in refs]
            got, sig = paired_tests([h for s in common for h in base[s]["hyps"]],
                                    {"row": [h for s in common for h in seeds[s]["hyps"]]}, pooled_refs, spec.bs, spec.ar)
            wins = sum(seeds[s]["bleu"] > base[s]["bleu"] for s in common)
            tests[key] = {**got["row"], "wins": f"{wins}/{len(common)}"}
            sigs.update(sig)
    return tests, sigs


def _delta(rows: dict, key: tuple, base_key: tuple, metric: str) -> str:
    a, b = rows.get(key, {}), rows.get(base_key, {})
    common = sorted(set(a) & set(b))
    if key == base_key or not common:
        return "baseline" if key == base_key else "—"
    m, s = mean_std([a[x][metric] - b[x][metric] for x in common])
    return f"{m:+.2f} ± {s:.2f}"


def scores_table(spec: StudySpec, rows: dict, tests: dict, budget_of: dict[str, int], baseline: tuple[str, str]) -> list[str]:
    bv, bo = baseline
    out = ["| variant | order | fine-tune steps | BLEU | chrF | repeated word % | ΔBLEU vs baseline | p (bs) | p (ar) "
           "| chrF p (bs) | seeds won | decode steps | decode s |", "|" + "---|" * 13]
    for v in spec.variants:
        b = budget_of[v.name]
        for o in v.orders:
            seeds = rows.get((v.name, o, b))
            if not seeds:
                continue
            t = tests.get((v.name, o, b), {})
            e = list(seeds.values())
            out.append(f"| {v.name} | {o} | {b} | {pm([x['bleu'] for x in e])} | {pm([x['chrf'] for x in e])} "
                       f"| {pm([x['repetition'] for x in e], 1)} | {_delta(rows, (v.name, o, b), (bv, bo, b), 'bleu')} "
                       f"| {fmt_p(t.get('bleu_p_bs'))} | {fmt_p(t.get('bleu_p_ar'))} | {fmt_p(t.get('chrf_p_bs'))} "
                       f"| {t.get('wins', '—')} | {mean_std([x['steps'] for x in e])[0]:.1f} | {pm([x['seconds'] for x in e], 1)} |")
    return out


def curves_table(spec: StudySpec, rows: dict, tests: dict) -> list[str]:
    budgets = sorted({b for _, _, b in rows})
    out = ["| variant | order | " + " | ".join(f"BLEU @ {b} (p bs)" for b in budgets) + " |",
           "|---|---|" + "---|" * len(budgets)]
    for v in spec.variants:
        for o in v.orders:
            cells = []
            for b in budgets:
                seeds = rows.get((v.name, o, b))
                p = tests.get((v.name, o, b), {}).get("bleu_p_bs")
                cells.append("—" if not seeds else pm([x["bleu"] for x in seeds.values()]) + (f" ({fmt_p(p)})" if p is not None else ""))
            out.append(f"| {v.name} | {o} | " + " | ".join(cells) + " |")
    return out


def compute_table(spec: StudySpec, records: list[dict]) -> list[str]:
    out = ["| variant | pre-training | pre-train steps | pre-train GFLOP/step | pre-train predicted tokens/step "
           "| pre-train TFLOP total | fine-tuning | fine-tune steps | fine-tune GFLOP/step | fine-tune predicted tokens/step "
           "| train wall min (pre + fine) |", "|" + "---|" * 11]
    for v in spec.variants:
        recs = [r for r in records if r["variant"] == v.name]
        if not recs:
            continue
        r0 = recs[0]
        pc, fc = r0["pretrain_compute"], r0["finetune_compute"]
        pre_steps = r0["pretrain"]["steps"] if r0["pretrain"] else 0
        change = lambda cfg, d: f"{cfg} " + ", ".join(f"`{k} {x}`" for k, x in d.items())  # noqa: E731
        walls = [(r["pretrain"]["wall_s"] if r["pretrain"] else 0.0) + r["finetune"]["wall_s"] for r in recs]
        if pc:
            pre = (f"{change(v.pretrain_config, v.pretrain)} | {pre_steps} | {pc['flops_per_step'] / 1e9:.2f} "
                   f"| {pc['tokens_per_step']:.0f} | {pre_steps * pc['flops_per_step'] / 1e12:.2f}")
        else:
            pre = "none (random init) | 0 | — | — | 0"
        out.append(f"| {v.name} | {pre} | {change(v.finetune_config, v.finetune)} | {r0['finetune']['steps']} "
                   f"| {fc['flops_per_step'] / 1e9:.2f} | {fc['tokens_per_step']:.0f} | {pm([w / 60 for w in walls], 1)} |")
    return out


def provenance(spec: StudySpec, records: list[dict], tokenizer: str, argv: list[str] | None) -> dict[str, Any]:
    data = Path(spec.data)
    runs = {}
    for r in records:
        for stage in ("pretrain", "finetune"):
            done = r[stage]
            if done:
                runs[f"{stage}/{r['variant']}/seed{r['seed']}"] = {"config": done["config"], "checkpoints": done["checkpoints"],
                                                                   "steps": done["steps"], "resumed": done["resumed"]}
    spec_sha = sha256_file(spec.path) if Path(spec.path).is_file() else None
    return {**environment(argv), "spec": spec.path, "spec_sha256": spec_sha,
            "seeds": spec.seeds, "data": str(data), "data_manifest_sha256": sha256_file(data / "manifest.json"),
            "tokenizer": str(tokenizer), "tokenizer_sha256": sha256_file(tokenizer), "runs": runs}


def write_results(spec: StudySpec, result: dict, out: Path, argv: list[str] | None) -> Path:
    records, refs = result["records"], result["refs"]
    rows = _rows(spec, records)
    budget_of = {v.name: max(v.budgets) for v in spec.variants}
    prov = provenance(spec, records, result["tokenizer"], argv)
    any_eval = next(iter(next(iter(rows.values())).values()))
    md = [f"# Study `{spec.name}` (`experiments/run_study.py`)", "",
          f"{spec.data} {spec.split} split{f' (first {spec.limit} sentences)' if spec.limit else ''}, seeds {spec.seeds}; "
          "cells are mean ± sample std over seeds. p-values: sacrebleu paired bootstrap "
          f"(bs, {spec.bs} samples) and approximate randomization (ar, {spec.ar} trials) against the baseline row at "
          "the same fine-tuning budget, on the seed-pooled corpus; *seeds won*: seeds whose BLEU beats the baseline's "
          "same-seed BLEU. *repeated word %*: share of outputs with an immediately repeated word. Fine-tuning budgets "
          "are checkpoints of one run to the largest budget (one LR schedule), so a smaller budget is a point on that "
          "run's curve, not a shorter run.", ""]
    all_tests, sigs = {}, {}
    for baseline in spec.baselines:
        tests, sig = significance(spec, rows, refs, baseline)
        sigs.update(sig)
        all_tests["/".join(baseline)] = {"/".join(map(str, k)): t for k, t in tests.items()}
        name = f"baseline **{baseline[0]} / {baseline[1]}**"
        md += [f"## Scores at the largest fine-tuning budget ({name})", "",
               *scores_table(spec, rows, tests, budget_of, baseline), "",
               f"## Learning curves (BLEU at each fine-tuning budget, checkpoints of one run per seed; p vs {name})", "",
               *curves_table(spec, rows, tests), ""]
    md += [
          "## Compute (FLOPs: torch.utils.flop_counter over one training step, forward + backward)", "",
          *compute_table(spec, records), "",
          f"BLEU signature: `{any_eval['bleu_signature']}`  ", f"chrF signature: `{any_eval['chrf_signature']}`  ",
          *[f"paired {t} signature: `{s}`  " for t, s in sigs.items()], "",
          "## Provenance", "", "```yaml",
          yaml.safe_dump({k: v for k, v in prov.items() if k != "runs"}, sort_keys=False, allow_unicode=True).rstrip(),
          "```", "", "<details><summary>resolved configs and checkpoint sha256 of every run</summary>", "", "```yaml",
          yaml.safe_dump(prov["runs"], sort_keys=False, allow_unicode=True).rstrip(), "```", "</details>", ""]
    table = out / "results.md"
    atomic_write_text(table, "\n".join(md))
    summary = {"spec": spec.name, "provenance": prov, "significance_signatures": sigs, "tests": all_tests,
               "rows": [{"variant": k[0], "order": k[1], "budget": k[2],
                         "seeds": {s: {m: e[m] for m in ("bleu", "chrf", "repetition", "steps", "seconds")} for s, e in v.items()}}
                        for k, v in rows.items()],
               "compute": [{"variant": r["variant"], "seed": r["seed"], "pretrain": r["pretrain_compute"],
                            "finetune": r["finetune_compute"]} for r in records]}
    atomic_write_text(out / "results.json", json.dumps(summary, indent=1, default=str))
    return table
