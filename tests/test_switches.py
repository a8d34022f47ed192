"""Boolean flags are switches: bare ``--force`` is true, ``--no-force`` false, an explicit value still works."""

import subprocess
import sys
from pathlib import Path

from plmgen.data.prepare import prepare
from plmgen.decoding.generate import generate
from plmgen.switches import bool_flags, expand_switches
from plmgen.train import train

ROOT = Path(__file__).resolve().parents[1]


def test_bool_flags_found_in_signatures_and_config_dataclasses():
    assert {"evaluate", "sample", "quiet"} <= bool_flags(generate)
    assert {"force", "quiet"} == bool_flags(prepare)
    assert {"train.progress_bar", "data.bi_data", "objective.span"} <= bool_flags(train)
    assert "train.max_steps" not in bool_flags(train) and "order" not in bool_flags(generate)


def test_expand_switches():
    assert expand_switches(generate, ["--evaluate"]) == ["--evaluate", "true"]
    assert expand_switches(generate, ["--evaluate", "--quiet", "--order", "l2r"]) == [
        "--evaluate", "true", "--quiet", "true", "--order", "l2r"]
    assert expand_switches(generate, ["--sample", "false", "--evaluate=false"]) == ["--sample", "false", "--evaluate=false"]
    assert expand_switches(generate, ["--no-evaluate", "--no_sample"]) == ["--evaluate", "false", "--sample", "false"]
    assert expand_switches(prepare, ["--force", "tsv"]) == ["--force", "true", "tsv"]  # a positional is not a value
    assert expand_switches(train, ["--train.progress_bar"]) == ["--train.progress_bar", "true"]
    assert expand_switches(generate, ["--order", "--no-such"]) == ["--order", "--no-such"]  # not ours to judge


def test_bare_switches_on_the_command_line(tmp_path):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"quelle {i}\tziel {i}\n" for i in range(40)))
    args = [sys.executable, str(ROOT / "cli.py"), "prepare", "tsv", "--path", str(tsv), "--out", str(tmp_path / "d")]
    first = subprocess.run(args + ["--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""  # --quiet took effect
    again = subprocess.run(args + ["--force", "--no-quiet"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "reusing" not in again.stderr and again.stderr  # rebuilt, and said so
