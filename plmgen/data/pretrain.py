"""XLNet pre-training data: documents -> token streams -> ``[reuse | A <sep> B <sep> <cls>]`` batches with recurrence.

Legend: B batch rows (= parallel text streams), T sequence length (data.seq_len), R reuse length (data.reuse_len),
S rows' stream length in tokens, N corpus length in tokens.

Follows the reference ``data_utils.py`` (zihangdai/xlnet):
* Documents are tokenized and concatenated with ``<eod>`` between them; every input line is a "sentence", and A/B
  cuts fall on sentence starts when the span has one.
* The corpus is cut into equal parallel streams (``batchify``); each device takes its own disjoint streams. Batch k,
  row b is the k-th chunk of stream b, and consecutive chunks advance by R tokens (the whole A+B span when R = 0),
  so the reuse part cached as Transformer-XL memory at step k sits right before the text of step k+1. When the
  streams run out they wrap to their start and the batch says so (``stream_reset``): the trainer drops those mems.
* Sequence layout ``[reuse (R) | A | <sep> | B | <sep> | <cls>]`` with segment ids 0 (reuse, A, first <sep>),
  1 (B, second <sep>), 2 (<cls>), as in the reference. B is A's true continuation with probability
  ``nsp_true_ratio`` (``is_next`` = 1), otherwise an equally long span from a random place in the corpus.
  Sequences are always exactly T tokens (no padding): the random B keeps the true B's length.
* ``bi_data``: the second half of the rows are the first half's streams reversed (reference ``batchify``), so the
  model's backward position table reads them right to left and their chunks also continue step to step.

Every batch is a pure function of (seed, rank, batch index k): resuming only needs the next k (the datamodule
saves it), and any number of DataLoader workers yields the same batches in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from plmgen.batch import Batch
from plmgen.errors import UserError

FUNCTIONAL_TOKENS = 3  # <sep> <sep> <cls>


@dataclass
class TokenStream:
    """A corpus as one token array with a sentence id per token (A/B cuts go where the id changes)."""

    ids: np.ndarray  # [N] int64
    sent: np.ndarray  # [N] int64, increasing; a new value starts a new line/sentence


def encode_documents(documents: Sequence[Sequence[str]], tokenizer) -> TokenStream:
    """Documents (each a list of lines) -> one stream, ``<eod>`` after every document (it joins the next one's
    first sentence, so a cut never separates a document from its end marker)."""
    ids: list[np.ndarray] = []
    sent: list[np.ndarray] = []
    sid = 0
    for doc in documents:
        lines = [line for line in doc if line.strip()]
        if not lines:
            continue
        encoded = tokenizer.encode_batch(lines)
        for j, toks in enumerate(encoded):
            if j == len(encoded) - 1:
                toks = list(toks) + [tokenizer.eod_id]
            if not toks:
                continue
            ids.append(np.asarray(toks, dtype=np.int64))
            sent.append(np.full(len(toks), sid, dtype=np.int64))
            sid += 1
    if not ids:
        raise UserError("pre-training data: no text (empty training split / text files)")
    return TokenStream(np.concatenate(ids), np.concatenate(sent))


def stream_layout(seq_len: int, reuse_len: int, ab_layout: bool) -> tuple[int, int]:
    """(span, advance): tokens of text per sequence, and how far a stream moves between consecutive batches."""
    span = seq_len - FUNCTIONAL_TOKENS if ab_layout else seq_len
    advance = reuse_len if reuse_len > 0 else span
    return span, advance


def worker_batches(batch: Callable[[int], Batch], start: int, limit: int | None = None) -> Iterator[Batch]:
    """``batch(k)`` for k = start, start + 1, … (``limit`` of them, None = endless), inside an IterableDataset:
    DataLoader workers take turns and are read round-robin, so the order is kept with any number of workers."""
    info = get_worker_info()
    wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
    k = start + wid
    end = None if limit is None else start + limit
    while end is None or k < end:
        yield batch(k)
        k += nw


class PretrainBatches(IterableDataset):
    """Yields whole collated batches (use ``DataLoader(ds, batch_size=None)``): batch k = chunk k of every stream.

    ``rows`` forward streams per device (``rows`` = batch_size, halved with ``bi_data``); device ``rank`` of
    ``world`` takes forward streams ``[rank*rows, (rank+1)*rows)`` of ``rows*world`` equal streams.
    ``start`` is the first batch index yielded; ``limit`` the number of batches (None = endless, wrapping).
    """

    def __init__(self, stream: TokenStream, *, batch_size: int, seq_len: int, reuse_len: int, sep_id: int,
                 cls_id: int, nsp_true_ratio: float = 0.5, ab_layout: bool = True, bi_data: bool = False,
                 seed: int = 0, rank: int = 0, world: int = 1, start: int = 0, limit: int | None = None):
        if bi_data and batch_size % 2:
            raise UserError(f"data.batch_size must be even with data.bi_data, got {batch_size}")
        self.rows = batch_size // 2 if bi_data else batch_size
        self.span, self.advance = stream_layout(seq_len, reuse_len, ab_layout)
        self.seq_len, self.reuse_len, self.ab_layout, self.bi_data = seq_len, reuse_len, ab_layout, bi_data
        self.sep_id, self.cls_id, self.nsp_true_ratio = sep_id, cls_id, nsp_true_ratio
        self.seed, self.rank, self.world, self.start, self.limit = seed, rank, world, start, limit
        self.corpus = stream
        n_streams = self.rows * world
        S = len(stream.ids) // n_streams  # reference batchify: drop the tail that does not fill every stream
        if S < self.span:
            raise UserError(
                f"pre-training data too small: {len(stream.ids)} tokens make {n_streams} streams of {S} tokens, "
                f"fewer than one sequence's {self.span}; lower data.batch_size or data.seq_len, or add text")
        lo, hi = rank * self.rows * S, (rank + 1) * self.rows * S
        self.ids = stream.ids[lo:hi].reshape(self.rows, S)  # [rows, S]
        self.sent = stream.sent[lo:hi].reshape(self.rows, S)
        self.stream_ids = np.arange(rank * self.rows, (rank + 1) * self.rows)
        if bi_data:  # backward rows: the same streams read right to left (ids offset so they stay distinct)
            self.ids = np.concatenate([self.ids, self.ids[:, ::-1]])
            self.sent = np.concatenate([self.sent, self.sent[:, ::-1]])
            self.stream_ids = np.concatenate([self.stream_ids, self.stream_ids + n_streams])
        self.chunks_per_pass = (S - self.span) // self.advance + 1

    def __iter__(self) -> Iterator[Batch]:
        return worker_batches(self.batch, self.start, self.limit)

    def batch(self, k: int) -> Batch:
        """Batch number k (a pure function of seed, rank and k)."""
        rng = np.random.default_rng([self.seed, self.rank, k])
        pos = (k % self.chunks_per_pass) * self.advance
        n_rows = self.ids.shape[0]
        T, R = self.seq_len, self.reuse_len
        input_ids = np.empty((n_rows, T), dtype=np.int64)
        seg = np.zeros((n_rows, T), dtype=np.int64)
        functional = np.zeros((n_rows, T), dtype=bool)
        is_next = np.ones(n_rows, dtype=np.int64)
        for b in range(n_rows):
            text = self.ids[b, pos : pos + self.span]
            if not self.ab_layout:
                input_ids[b] = text
                continue
            a, bb, is_next[b] = self._split_a_b(rng, b, pos + R, text[R:])
            row = np.concatenate([text[:R], a, [self.sep_id], bb, [self.sep_id, self.cls_id]])
            input_ids[b] = row
            cut = R + len(a) + 1  # segment 0 = reuse + A + first <sep>
            seg[b, cut:] = 1
            seg[b, -1] = 2
            functional[b, [cut - 1, T - 2, T - 1]] = True
        out: Batch = {
            "input_ids": torch.from_numpy(input_ids),
            "seg_ids": torch.from_numpy(seg),
            "valid": torch.ones(n_rows, T, dtype=torch.bool),
            "functional": torch.from_numpy(functional),
            "reuse_len": R,
            "stream_id": torch.from_numpy(self.stream_ids.copy()),
            "stream_reset": torch.full((n_rows,), k % self.chunks_per_pass == 0),
            "batch_index": k,
        }
        if self.ab_layout:
            out["is_next"] = torch.from_numpy(is_next)
            out["cls_pos"] = torch.full((n_rows,), T - 1)  # the NSP head reads <cls> here, without a device read
        if self.bi_data:
            out["bi_backward"] = True
        return out

    def _split_a_b(self, rng: np.random.Generator, row: int, begin: int, text: np.ndarray):
        """text (the span after the reuse part) -> (A, B, is_next); lengths add up to len(text), each >= 1."""
        n = len(text)
        sent = self.sent[row, begin : begin + n]
        starts = np.flatnonzero(sent[1:] != sent[:-1]) + 1  # sentence starts inside the span, never at 0
        cut = int(rng.choice(starts)) if len(starts) else int(rng.integers(1, n))
        a, b_len = text[:cut], n - cut
        if rng.random() < self.nsp_true_ratio:
            return a, text[cut:], 1
        # Random B: same length, from anywhere in the corpus, reversed for a backward row.
        src = int(rng.integers(0, len(self.corpus.ids) - b_len + 1))
        b = self.corpus.ids[src : src + b_len]
        return a, (b[::-1] if row >= self.rows else b), 0
