"""experiments/gpu_check.sh --dry-run: the GPU check's steps (device tests, bench train, bench decode, a synthetic
train -> generate -> BLEU run) on the CPU at tiny sizes, so the script cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    env = {**os.environ, "GPU_CHECK_DIR": str(tmp_path)}
    r = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "gpu_check: all steps ok" in out
    for step in ("tests", "train", "decode", "e2e"):
        assert re.search(rf"^  {step} +ok \d+ s", out, re.M), out
    assert re.search(r"mfu bf16: [0-9.]+, mask share bf16: [0-9.]+", out), out
    assert re.search(r"BLEU = [0-9.]+", out), out
    assert not (ROOT / "experiments" / "results" / "gpu_check").exists()


def test_gpu_check_refuses_unknown_arguments():
    r = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_check.sh"), "--wet"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown argument --wet")
