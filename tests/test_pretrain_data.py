"""The XLNet pre-training pipeline: layout, A/B, recurrence across batches, bi_data, DDP sharding, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from train_helpers import make_dataset, make_tokenizer

from plmgen.data.module import pretrain_documents
from plmgen.data.pretrain import PretrainBatches, encode_documents
from plmgen.errors import UserError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    data = make_dataset(root)
    tok = make_tokenizer(root, data)
    from plmgen.config import DataConfig, ExperimentConfig

    cfg = ExperimentConfig(data=DataConfig(path=str(data)))
    return tok, encode_documents(pretrain_documents(cfg, "train"), tok)


def batches(tok, stream, **kw):
    args = dict(batch_size=4, seq_len=32, reuse_len=8, sep_id=tok.sep_id, cls_id=tok.cls_id, seed=3)
    return PretrainBatches(stream, **{**args, **kw})


def find(hay: np.ndarray, needle: np.ndarray) -> list[int]:
    """Every offset where needle occurs contiguously in hay."""
    win = np.lib.stride_tricks.sliding_window_view(hay, len(needle))
    return np.flatnonzero((win == needle).all(1)).tolist()


def test_documents_are_joined_by_eod(corpus):
    tok, stream = corpus
    assert (stream.ids == tok.eod_id).sum() == 2  # source side, target side
    assert stream.ids[-1] == tok.eod_id
    assert np.all(np.diff(stream.sent) >= 0)


def test_layout_segments_and_functional_tokens(corpus):
    tok, stream = corpus
    ds = batches(tok, stream, nsp_true_ratio=0.5)
    for k in range(6):
        b = ds.batch(k)
        ids, seg, fn = b["input_ids"], b["seg_ids"], b["functional"]
        assert ids.shape == (4, 32) and b["valid"].all() and b["reuse_len"] == 8
        for r in range(4):
            seps = torch.nonzero(ids[r] == tok.sep_id).flatten().tolist()
            assert seps[-1] == 30 and ids[r, 31] == tok.cls_id
            first = seps[-2]  # the <sep> after A (text never encodes control symbols)
            assert first > 8
            assert torch.equal(fn[r].nonzero().flatten(), torch.tensor([first, 30, 31]))
            assert (seg[r, : first + 1] == 0).all() and (seg[r, first + 1 : 31] == 1).all() and seg[r, 31] == 2


def test_true_b_continues_a_and_random_b_does_not(corpus):
    tok, stream = corpus
    for ratio, label in ((1.0, 1), (0.0, 0)):
        ds = batches(tok, stream, nsp_true_ratio=ratio)
        b = ds.batch(2)
        assert (b["is_next"] == label).all()
        for r in range(4):
            no_func = b["input_ids"][r][~b["functional"][r]].numpy()
            chunk = ds.ids[r, 2 * ds.advance : 2 * ds.advance + ds.span]
            assert np.array_equal(no_func, chunk) == (label == 1)


def test_a_b_cut_falls_on_a_sentence_start_when_there_is_one(corpus):
    tok, stream = corpus
    ds = batches(tok, stream, nsp_true_ratio=1.0, seq_len=64, reuse_len=16)
    for k in range(5):
        b = ds.batch(k)
        for r in range(4):
            first = int((b["input_ids"][r] == tok.sep_id).nonzero()[0])
            begin = k * ds.advance  # stream offset of the row's first token
            # position `first` in the row is the <sep>; the stream token after A is at begin + first
            s = ds.sent[r, begin : begin + ds.span]
            if (np.diff(s[16:]) != 0).any():
                assert s[first] != s[first - 1]


@pytest.mark.parametrize("reuse_len,bi_data", [(8, True), (0, False)])
def test_consecutive_batches_continue_each_stream(corpus, reuse_len, bi_data):
    """The text cached as memory at step k (reuse part, or everything) is followed by step k+1's text."""
    tok, stream = corpus
    ds = batches(tok, stream, nsp_true_ratio=1.0, reuse_len=reuse_len, bi_data=bi_data)
    n = min(ds.chunks_per_pass, 6)
    rows = [ds.batch(k) for k in range(n)]
    for r in range(4):
        cached = []
        for b in rows:
            text = b["input_ids"][r][~b["functional"][r]].numpy()
            cached.append(text[:reuse_len] if reuse_len else text)
        joined = np.concatenate(cached)
        backward = bi_data and r >= 2
        hits = find(stream.ids, joined[::-1].copy() if backward else joined)
        assert len(hits) == 1, f"row {r}: cached parts of consecutive batches are not contiguous text"
    if bi_data:  # backward row = its forward partner's stream, reversed
        assert torch.equal(rows[0]["stream_id"][2:] - rows[0]["stream_id"][:2], torch.full((2,), 2))
        assert rows[0]["bi_backward"] is True


def test_stream_reset_marks_the_wrap(corpus):
    tok, stream = corpus
    ds = batches(tok, stream, batch_size=16, seq_len=128, reuse_len=64)
    c = ds.chunks_per_pass
    assert c >= 2
    flags = [bool(ds.batch(k)["stream_reset"].all()) for k in range(2 * c + 1)]
    assert flags == [k % c == 0 for k in range(2 * c + 1)]
    assert torch.equal(ds.batch(c)["input_ids"][:, :64], ds.batch(0)["input_ids"][:, :64])  # wrapped to the start


def test_ranks_read_disjoint_streams(corpus):
    tok, stream = corpus
    offsets = []
    for rank in range(2):
        ds = batches(tok, stream, rank=rank, world=2, reuse_len=16)
        b = ds.batch(0)
        assert set(b["stream_id"].tolist()) == set(range(rank * 4, rank * 4 + 4))
        for r in range(4):
            hits = find(stream.ids, b["input_ids"][r, :16].numpy())
            offsets.append(hits[0])
    assert len(set(offsets)) == 8
    S = len(stream.ids) // 8
    assert sorted(o // S for o in offsets) == list(range(8))  # one stream each, none shared


def test_batches_are_a_function_of_their_index(corpus):
    """Resume = start at the saved index; workers keep the order."""
    tok, stream = corpus
    ds = batches(tok, stream)
    want = [ds.batch(k) for k in range(5, 11)]
    resumed = batches(tok, stream, start=5, limit=6)
    loader = DataLoader(resumed, batch_size=None, num_workers=2)
    got = list(loader)
    assert [g["batch_index"] for g in got] == list(range(5, 11))
    for g, w in zip(got, want):
        for key in ("input_ids", "seg_ids", "functional", "is_next"):
            assert torch.equal(g[key], w[key])
    other_seed = batches(tok, stream, seed=4).batch(5)
    assert not torch.equal(other_seed["input_ids"], want[0]["input_ids"])


def test_too_little_text_is_a_user_error(corpus):
    tok, stream = corpus
    with pytest.raises(UserError, match="too small"):
        batches(tok, stream, batch_size=len(stream.ids) // 20)
