"""Configs the package reads ship inside it (package data), so a non-editable install runs the demo and bench train.
In the source tree plmgen/configs holds links to experiments/configs (one copy of each file, edited where the
README and the studies name it); a wheel holds the files themselves."""

from __future__ import annotations

import tomllib
from pathlib import Path

from plmgen import demo
from plmgen.benchmarks import train as bench_train

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "plmgen"


def test_configs_the_package_reads_are_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["plmgen"]
    shipped = {p.resolve() for pattern in patterns for p in PKG.glob(pattern)}
    needed = [demo.CONFIGS / "demo-pretrain.yaml", demo.CONFIGS / "demo-finetune.yaml",
              bench_train.PACKAGED / "small-cpu.yaml"]
    for path in needed:
        assert path.is_file() and path.parent == PKG / "configs", path
        assert path.resolve() in shipped, f"{path} is not matched by [tool.setuptools.package-data] {patterns}"


def test_packaged_configs_are_the_experiment_configs():
    for packaged in (PKG / "configs").glob("*.yaml"):
        assert packaged.resolve() == (ROOT / "experiments" / "configs" / packaged.name).resolve(), packaged
