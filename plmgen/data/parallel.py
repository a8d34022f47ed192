"""Parallel (seq2seq) data: token pairs and their collate into ``[source <sep> target]`` batches.

Legend: B batch, T padded length (S source + 1 <sep> + L target).

Batch keys (the typed ``plmgen.batch.Batch``): ``input_ids`` [B, T], ``seg_ids`` [B, T] (0 source and <sep>, 1 target, 0 padding),
``valid`` [B, T], ``functional`` [B, T] (<sep> and padding: never predicted), ``target`` [B, T] (target
positions), ``src_len`` [B] (S, without <sep>), ``tgt_len`` [B], and their maxima as host ints ``src_len_max``,
``tgt_len_max`` (they size the objective's tensors without reading the device). Padding sits at the right, so per-example
positions stay contiguous and a padded batch gives each example the relative distances it would have alone.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset

from plmgen.data.pretrain import worker_batches
from plmgen.batch import Batch
from plmgen.errors import UserError

Pair = tuple[list[int], list[int]]


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_src_len: int, max_tgt_len: int) -> list[Pair]:
    """Tokenize (source, target) text pairs, truncating each side; pairs with an empty side are dropped."""
    src = tokenizer.encode_batch([s for s, _ in pairs])
    tgt = tokenizer.encode_batch([t for _, t in pairs])
    return [(s[:max_src_len], t[:max_tgt_len]) for s, t in zip(src, tgt) if s and t]


class PairDataset(Dataset):
    def __init__(self, pairs: list[Pair]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Pair:
        return self.pairs[i]


def pair_batch(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], sep_id: int,
               pad_id: int) -> Batch:
    """Right-padded ``[source <sep> target]`` rows; ``targets`` may hold placeholder ids (e.g. <mask> slots)."""
    B = len(sources)
    lens = [len(s) + 1 + len(t) for s, t in zip(sources, targets)]
    T = max(lens)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    seg = torch.zeros(B, T, dtype=torch.long)
    target = torch.zeros(B, T, dtype=torch.bool)
    for b, (s, t) in enumerate(zip(sources, targets)):
        S, L = len(s), len(t)
        ids[b, :S] = torch.tensor(list(s), dtype=torch.long)
        ids[b, S] = sep_id
        if L:
            ids[b, S + 1 : S + 1 + L] = torch.tensor(list(t), dtype=torch.long)
        seg[b, S + 1 : S + 1 + L] = 1
        target[b, S + 1 : S + 1 + L] = True
    valid = torch.arange(T)[None, :] < torch.tensor(lens)[:, None]
    functional = ~valid | ((ids == sep_id) & ~target)
    return {
        "input_ids": ids, "seg_ids": seg, "valid": valid, "functional": functional, "target": target,
        "src_len": torch.tensor([len(s) for s in sources]), "tgt_len": torch.tensor([len(t) for t in targets]),
        "src_len_max": max(map(len, sources), default=0), "tgt_len_max": max(map(len, targets), default=0),
    }


class PairCollate:
    """Picklable collate (DataLoader workers) for lists of (source ids, target ids)."""

    def __init__(self, sep_id: int, pad_id: int):
        self.sep_id, self.pad_id = sep_id, pad_id

    def __call__(self, examples: list[Pair]) -> Batch:
        return pair_batch([s for s, _ in examples], [t for _, t in examples], self.sep_id, self.pad_id)


class PairBatches(IterableDataset):
    """Endless shuffled training batches of a ``PairDataset``; batch k is a pure function of (seed, rank, k), so
    the data position is one integer (``batch_index``, as for the pre-training streams) and a resumed run continues
    mid-epoch with exactly the batches it would have seen.

    Epoch e = k // per_epoch shuffles all pairs with a generator seeded by (seed, e); under DDP each rank takes its
    own slice of every global batch. The last partial batch of an epoch is kept on one process (unless
    ``drop_last``) and dropped across ranks, so every rank steps in lockstep.
    """

    def __init__(self, ds: PairDataset, collate: "PairCollate", batch_size: int, *, seed: int = 0, rank: int = 0,
                 world: int = 1, start: int = 0, drop_last: bool = False, batch_tokens: int = 0):
        self.ds, self.collate, self.bs = ds, collate, batch_size
        self.seed, self.rank, self.world, self.start = seed, rank, world, start
        self.batch_tokens = batch_tokens
        self._epoch, self._batches = -1, []  # bucketed mode: the latest epoch's batches (index tensors)
        self._sizes: list[int] = []  # bucketed mode: batches per epoch, epochs 0.. (for locating batch k)
        n, per = len(ds), batch_size * world
        self.per_epoch = n // per if (drop_last or world > 1) else -(-n // per)
        if self.per_epoch == 0:
            raise UserError(f"{n} training pairs are fewer than one batch of {batch_size}"
                            + (f" per process x {world} processes" if world > 1 else "") + "; lower data.batch_size")
        if batch_tokens:
            self.lengths = torch.tensor([len(s) + 1 + len(t) for s, t in ds.pairs])
            if int(self.lengths.max()) > batch_tokens:
                raise UserError(f"data.batch_tokens {batch_tokens} is smaller than the longest training pair "
                                f"({int(self.lengths.max())} tokens); raise it or lower data.seq_len")

    def _perm(self, epoch: int) -> Tensor:
        return torch.randperm(len(self.ds), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))

    def epoch_batches(self, epoch: int) -> list[Tensor]:
        """Bucketed mode: epoch's batches of this rank (pair indices); the latest epoch is kept for the next calls."""
        if self._epoch != epoch:
            batches = bucket_batches(self.lengths, self._perm(epoch), self.batch_tokens, self.seed * 1_000_003 + epoch)
            keep = len(batches) // self.world * self.world if self.world > 1 else len(batches)
            self._epoch, self._batches = epoch, batches[self.rank: keep: self.world]
        return self._batches

    def locate(self, k: int) -> tuple[int, int]:
        """Batch k -> (epoch, index within the epoch). Bucketed epochs differ in length: each epoch's length is
        computed once and kept, so a step costs no re-bucketing of earlier epochs."""
        if not self.batch_tokens:
            return divmod(k, self.per_epoch)
        epoch = 0
        while True:
            while len(self._sizes) <= epoch:
                self._sizes.append(len(self.epoch_batches(len(self._sizes))))
            if k < self._sizes[epoch]:
                return epoch, k
            k, epoch = k - self._sizes[epoch], epoch + 1

    def batch(self, k: int) -> Batch:
        epoch, i = self.locate(k)
        if self.batch_tokens:
            idx = self.epoch_batches(epoch)[i]
        else:
            lo = (i * self.world + self.rank) * self.bs
            idx = self._perm(epoch)[lo: lo + self.bs]
        out = self.collate([self.ds[int(j)] for j in idx])
        out["batch_index"] = k
        return out

    def __iter__(self) -> Iterator[Batch]:
        return worker_batches(self.batch, self.start)


def bucket_batches(lengths: Tensor, perm: Tensor, batch_tokens: int, seed: int, chunk: int = 4096) -> list[Tensor]:
    """Length-bucketed batches of one epoch: pair indices in ``perm`` order are cut into chunks of ``chunk`` pairs,
    each chunk sorted by length and cut into batches whose padded size (rows x longest row) stays within
    ``batch_tokens``; the batch order is then shuffled (seeded). Padding then costs little and short pairs come in
    large batches, while every pair is still seen once per epoch."""
    batches: list[Tensor] = []
    for lo in range(0, perm.numel(), chunk):
        idx = perm[lo: lo + chunk]
        idx = idx[torch.argsort(lengths[idx], stable=True)]
        cur: list[int] = []
        longest = 0
        for j in idx.tolist():
            n = int(lengths[j])
            if cur and max(longest, n) * (len(cur) + 1) > batch_tokens:
                batches.append(torch.tensor(cur))
                cur, longest = [], 0
            cur.append(j)
            longest = max(longest, n)
        if cur:
            batches.append(torch.tensor(cur))
    order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed))
    return [batches[int(i)] for i in order]


def build_parallel_datasets(cfg, tokenizer) -> tuple[PairDataset, PairDataset, PairCollate]:
    """(train, validation, collate) for a prepared parallel folder (``cfg``: the experiment's DataConfig)."""
    from plmgen.data.splits import load_pairs

    max_src, max_tgt = split_limits(cfg.seq_len, cfg.max_src_len, cfg.max_tgt_len)
    train, dev = load_pairs(cfg.path, "train"), load_pairs(cfg.path, "dev")
    train = train[: cfg.max_pairs] if cfg.max_pairs else train
    dev = dev[: cfg.max_val_pairs] if cfg.max_val_pairs else dev
    return (PairDataset(encode_pairs(tokenizer, train, max_src, max_tgt)),
            PairDataset(encode_pairs(tokenizer, dev, max_src, max_tgt)),
            PairCollate(tokenizer.sep_id, tokenizer.pad_id))


def split_limits(seq_len: int, max_src_len: int = 0, max_tgt_len: int = 0) -> tuple[int, int]:
    """Longest source and target kept (tokens): explicit limits, else seq_len − 1 (<sep>) shared half and half."""
    max_src = max_src_len or (seq_len - 1) // 2
    max_tgt = max_tgt_len or max(1, seq_len - 1 - max_src)
    return max_src, max_tgt
