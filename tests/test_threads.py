"""--threads: applied, said at start, a busy-machine warning only when threads > 1 and load > cores."""

import io

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
