"""The typed batch contract (plmgen.batch.Batch) holds for what both data pipelines produce."""

from __future__ import annotations

import typing

import torch
from train_helpers import make_dataset, make_tokenizer

from plmgen.batch import Batch
from plmgen.config import DataConfig, ExperimentConfig
from plmgen.data.module import pretrain_documents
from plmgen.data.parallel import pair_batch
from plmgen.data.pretrain import PretrainBatches, encode_documents
from plmgen.objectives.seq2seq import with_end_marker

HINTS = typing.get_type_hints(Batch)


def check(batch: dict) -> None:
    """Every key is declared in Batch, with the declared type; tensors are batch-first with B rows."""
    rows = batch["input_ids"].shape[0]
    for key, value in batch.items():
        assert key in HINTS, f"undeclared batch key {key!r}: add it to plmgen.batch.Batch"
        assert isinstance(value, HINTS[key]), (key, type(value), HINTS[key])
        if isinstance(value, torch.Tensor):
            assert value.shape[0] == rows, key
    for key in ("valid", "functional", "target", "end", "stream_reset"):
        if key in batch:
            assert batch[key].dtype == torch.bool, key


def test_pretraining_batches_follow_the_contract(tmp_path):
    data = make_dataset(tmp_path)
    tok = make_tokenizer(tmp_path, data)
    stream = encode_documents(pretrain_documents(ExperimentConfig(data=DataConfig(path=str(data))), "train"), tok)
    for bi_data in (False, True):
        ds = PretrainBatches(stream, batch_size=4, seq_len=32, reuse_len=8, sep_id=tok.sep_id, cls_id=tok.cls_id,
                             seed=3, bi_data=bi_data)
        check(ds.batch(0))


def test_pair_batches_follow_the_contract():
    b = pair_batch([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], sep_id=3, pad_id=0)
    check(b)
    check(with_end_marker(b, end_id=4, pad_id=0))


def test_the_check_catches_an_undeclared_key():
    b = pair_batch([[5]], [[6]], sep_id=3, pad_id=0)
    b["mystery"] = torch.zeros(1)
    try:
        check(b)
    except AssertionError as e:
        assert "mystery" in str(e)
    else:
        raise AssertionError("an undeclared key passed the contract check")
