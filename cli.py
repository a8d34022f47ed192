"""plmgen command line: ``python cli.py {prepare,distill,train,generate,evaluate,bench,demo} [--help]``.

Thin on purpose: each command is a typed function in the library; jsonargparse turns its signature and docstring
into flags. Only the chosen command's module is imported, so ``--help`` and errors come back fast.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "prepare": ("plmgen.data.prepare", "prepare", "fetch, align and split a benchmark (or user data)"),
    "distill": ("plmgen.data.distill", "distill", "a data folder whose training targets are a teacher's outputs"),
    "train": ("plmgen.train", "train", "pre-train or fine-tune an XLNet (Lightning)"),
    "generate": ("plmgen.decoding.generate", "generate", "any-order query-stream generation"),
    "evaluate": ("plmgen.evaluation", "evaluate", "sacrebleu BLEU/chrF of hypotheses against references"),
    "bench": ("plmgen.benchmarks", "bench", "benchmarks printing ratios against a same-run reference"),
    "demo": ("plmgen.demo", "demo", "the README demo"),
}


def usage() -> str:
    lines = ["usage: python cli.py COMMAND [--help] [flags]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def normalize_flag(arg: str) -> str:
    """Accept ``--length-beam`` as well as jsonargparse's ``--length_beam`` (values are left untouched)."""
    if not arg.startswith("--"):
        return arg
    name, eq, value = arg.partition("=")
    return name.replace("-", "_").replace("__", "--", 1) + eq + value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[argv[0]]
    from plmgen.errors import run_cli

    fn = getattr(importlib.import_module(module), func)
    return run_cli(fn, args=[normalize_flag(a) for a in argv[1:]], prog=f"cli.py {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
