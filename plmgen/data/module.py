"""LightningDataModule: builds the datasets a config's ``data.kind`` asks for and remembers the data position.

``pretrain``: :mod:`plmgen.data.pretrain` text streams (train split + extra text files for training, the dev split
for validation). ``parallel``: :func:`plmgen.data.parallel.build_parallel_datasets` (imported only when used).

Resume: training batches (pre-training streams and shuffled parallel pairs alike) are a pure function of their
index, so the data position is one integer, the index of the next training batch. It is updated when a batch reaches the device (``on_after_batch_transfer``, i.e.
when the trainer consumes it, not when a worker prefetches it) and saved/restored by Lightning through
``state_dict``/``load_state_dict`` with the rest of the checkpoint.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from plmgen.config import ExperimentConfig
from plmgen.data.pretrain import PretrainBatches, encode_documents
from plmgen.errors import UserError
from plmgen.lit import rank_world


def pretrain_documents(cfg: ExperimentConfig, split: str) -> list[list[str]]:
    """Documents for one split: each side of the prepared folder's split, then (train only) each extra text file."""
    from plmgen.data.splits import load_pairs
    from plmgen.data.userdata import read_text_files

    docs: list[list[str]] = []
    d = cfg.data
    if d.use_benchmark_text:
        pairs = load_pairs(d.path, split)
        docs += [[s for s, _ in pairs], [t for _, t in pairs]]
    if split == "train":
        docs += [read_text_files([f]) for f in d.text_files]
    return docs


class PLMDataModule(L.LightningDataModule):
    def __init__(self, cfg: ExperimentConfig, tokenizer) -> None:
        super().__init__()
        self.cfg, self.tokenizer = cfg, tokenizer
        self.next_batch = 0  # index of the next training batch (the resumable data position)
        self.train_ds = self.val_ds = None
        self.collate = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_ds is not None:
            return
        d = self.cfg.data
        if d.kind == "parallel":
            from plmgen.data.parallel import build_parallel_datasets

            self.train_ds, self.val_ds, self.collate = build_parallel_datasets(d, self.tokenizer)
            return
        self.train_stream = encode_documents(pretrain_documents(self.cfg, "train"), self.tokenizer)
        val_docs = pretrain_documents(self.cfg, "dev") if d.use_benchmark_text else []
        self.val_stream = encode_documents(val_docs, self.tokenizer) if val_docs and d.val_batches else None

    def _pretrain(self, stream, *, start: int, limit: int | None, seed: int) -> PretrainBatches:
        d, tok = self.cfg.data, self.tokenizer
        rank, world = rank_world(getattr(self, "trainer", None))
        return PretrainBatches(
            stream, batch_size=d.batch_size, seq_len=d.seq_len, reuse_len=d.reuse_len, sep_id=tok.sep_id,
            cls_id=tok.cls_id, nsp_true_ratio=d.nsp_true_ratio, ab_layout=d.ab_layout, bi_data=d.bi_data,
            seed=seed, rank=rank, world=world, start=start, limit=limit)

    def train_dataloader(self) -> DataLoader:
        d = self.cfg.data
        if d.kind == "parallel":
            from plmgen.data.parallel import PairBatches

            rank, world = rank_world(getattr(self, "trainer", None))
            ds = PairBatches(self.train_ds, self.collate, d.batch_size, seed=d.seed, rank=rank, world=world,
                             start=self.next_batch, batch_tokens=d.batch_tokens)
            return DataLoader(ds, batch_size=None, num_workers=d.num_workers)
        ds = self._pretrain(self.train_stream, start=self.next_batch, limit=None, seed=d.seed)
        return DataLoader(ds, batch_size=None, num_workers=d.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        d = self.cfg.data
        if d.kind == "parallel":
            return DataLoader(self.val_ds, batch_size=d.batch_size, collate_fn=self.collate,
                              num_workers=d.num_workers)
        if self.val_stream is None:
            return []
        try:
            ds = self._pretrain(self.val_stream, start=0, limit=1, seed=d.seed + 1)
        except UserError as e:
            raise UserError(f"validation (dev split): {e}") from None
        ds.limit = min(d.val_batches, ds.chunks_per_pass)  # one pass at most: a fixed, repeatable validation set
        return DataLoader(ds, batch_size=None, num_workers=0)

    # -- the data position -----------------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training and isinstance(batch, dict) and "batch_index" in batch:
            self.next_batch = int(batch["batch_index"]) + 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"next_batch": self.next_batch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.next_batch = int(state_dict.get("next_batch", 0))
