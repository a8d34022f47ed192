"""--threads: applied, said at start, a busy-machine warning only when threads > 1 and load > cores."""

import io
import platform
import statistics
import subprocess
import sys

import pytest
import torch

from plmgen.errors import UserError
from plmgen.threads import busy_warning, say_threads, setup_threads


def test_busy_warning():
    assert "try --threads 1" in busy_warning(2, load=7.5, cores=2)
    assert busy_warning(2, load=1.0, cores=2) is None
    assert busy_warning(1, load=7.5, cores=2) is None  # already one thread


def test_setup_threads_sets_and_says():
    before = torch.get_num_threads()
    try:
        out = io.StringIO()
        assert setup_threads(1) == 1 and torch.get_num_threads() == 1
        assert say_threads(file=out) == 1 and out.getvalue().startswith("threads: 1 (cores usable: ")
        with pytest.raises(UserError, match="--threads must be an integer >= 1"):
            setup_threads(0)
    finally:
        torch.set_num_threads(before)


_STEPS = """
import resource, sys, dataclasses, torch
from plmgen.threads import keep_freed_memory
applied = keep_freed_memory()
from plmgen.benchmarks.train import PACKAGED, _random_batches
from plmgen.config import ExperimentConfig
from plmgen.model import XLNet
from plmgen.train import make_objective
cfg = ExperimentConfig.from_yaml(str(PACKAGED / "small-cpu.yaml"))
cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, n_layer=2))
torch.manual_seed(0)
model, obj = XLNet(cfg.model).train(), make_objective(cfg, None).train()
data = _random_batches(cfg, n_tokens=12 * cfg.data.batch_size * cfg.data.seq_len * 2)
faults = []
for k in range(10):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = obj(model, data.batch(k))
    out.loss.backward()
    model.zero_grad(set_to_none=True)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(applied, *faults)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's")
def test_keep_freed_memory_stops_page_faults_between_steps():
    """Training steps after the first two fault (almost) no pages in (median < 1,000; a step that reaches a new
    peak may still grow the heap once). glibc's defaults fault 5,000-16,000 per step of this workload: freed
    activations go back to the kernel and come back as fresh pages."""
    run = subprocess.run([sys.executable, "-c", _STEPS], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    applied, *faults = run.stdout.split()
    assert applied == "True"
    assert statistics.median(int(f) for f in faults[2:]) < 1000, faults
