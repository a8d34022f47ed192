"""The thin CLI: dispatch, dash/underscore flags, one-line errors instead of tracebacks."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cli  # noqa: E402


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_normalize_flag():
    assert cli.normalize_flag("--length-beam") == "--length_beam"
    assert cli.normalize_flag("--train.max-steps=5") == "--train.max_steps=5"
    assert cli.normalize_flag("--out=a-b") == "--out=a-b"
    assert cli.normalize_flag("a-b") == "a-b"


def test_unknown_command_is_one_line_error():
    r = run("frobnicate")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unknown command" in r.stderr and "generate" in r.stderr


def test_user_error_is_one_line(tmp_path):
    r = run("demo", "--stage", "backbone", "--hf-checkpoint", str(tmp_path))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith("error:") and "config.json" in r.stderr
    assert "Traceback" not in r.stderr


def test_demo_runs():
    r = run("demo", "--stage", "backbone", "--length", "6", "--num-predict", "2")
    assert r.returncode == 0, r.stderr
    assert "round trip lossless: True" in r.stdout


def test_bench_checkpoint_only_for_decode():
    r = run("bench", "train", "--checkpoint", "x.ckpt")
    assert r.returncode == 2 and "goes with `bench decode` only" in r.stderr and "Traceback" not in r.stderr
    r = run("bench", "backbone", "--objectives", "plm")
    assert r.returncode == 2 and "--objectives goes with `bench train` only" in r.stderr
    r = run("bench", "decode", "--precision", "fp16")
    assert r.returncode == 2 and "--precision: precision must be one of fp32, bf16" in r.stderr and "Traceback" not in r.stderr
    r = run("bench", "train", "--experiment", "no/such.yaml")
    assert r.returncode == 2 and "--experiment no/such.yaml: no such file" in r.stderr
    r = run("bench", "frobnicate")
    assert r.returncode == 2 and "unknown benchmark" in r.stderr and "decode" in r.stderr
