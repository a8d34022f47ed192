"""Files and folders plmgen writes through temp files get the user's umask permissions (mkstemp alone: rw-------)."""

import os
import stat

import pytest
from train_helpers import make_dataset

from plmgen.config import atomic_write_text
from plmgen.lit import AtomicCheckpointIO


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_follow_the_umask(tmp_path, umask_027):
    atomic_write_text(tmp_path / "a.txt", "x")
    AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    assert mode(tmp_path / "a.txt") == 0o640 and mode(tmp_path / "last.ckpt") == 0o640
    data = make_dataset(tmp_path, n_train=20, n_dev=4)
    assert mode(data) == 0o750
    assert all(mode(p) == 0o640 for p in data.iterdir())
