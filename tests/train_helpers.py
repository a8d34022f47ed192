"""Shared by the training tests: a small synthetic corpus as a prepared folder, a tiny tokenizer, configs."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WORDS_SRC = "der die das hund katze maus sieht frisst rot blau klein gross und nicht haus baum".split()
WORDS_TGT = "the a dog cat mouse sees eats red blue small big and not house tree runs".split()


def sentences(n: int, words: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + f" {i % 97} ." for i in range(n)]


def make_dataset(root: Path, n_train: int = 400, n_dev: int = 60) -> Path:
    """A prepared folder (train/dev/test .src/.tgt + manifest) of synthetic parallel sentences."""
    from plmgen.data.splits import Pair, write_dataset

    def pairs(n, seed):
        return [Pair(s, t) for s, t in zip(sentences(n, WORDS_SRC, seed), sentences(n, WORDS_TGT, seed + 1))]

    splits = {"train": pairs(n_train, 0), "dev": pairs(n_dev, 10), "test": pairs(n_dev, 20)}
    return write_dataset(root / "data", splits, "src", "tgt", {"recipe": "tsv"}, Counter())


def make_tokenizer(root: Path, data_dir: Path):
    from plmgen.data.splits import monolingual_text
    from plmgen.tokenizer import Tokenizer

    return Tokenizer.train(monolingual_text(data_dir), out_prefix=root / "tok" / "spiece", vocab_size=120)


class StandInObjective(nn.Module):
    """Follows the Objective interface (plmgen.objectives.base.Objective): next-token LM under a causal content mask, with mems.

    A stand-in for the tests of training machinery, so they do not depend on one objective's details.
    """

    name = "stand-in"
    uses_mems = True

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # an objective-owned parameter, like an NSP head
        self.seen_mems: list = []  # (training, batch_index, mems in, mems out) per forward

    def forward(self, model, batch, mems=None, generator=None):
        from plmgen.objectives import ObjectiveOutput

        ids = batch["input_ids"]
        B, T = ids.shape
        causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()[None].expand(B, T, T)
        out = model(ids, seg_ids=batch.get("seg_ids"), content_mask=causal, mems=mems)
        logits = model.logits(out.h[:, :-1]) * self.scale  # [B, T-1, V]
        keep = ~batch["functional"][:, 1:]
        loss = F.cross_entropy(logits[keep].float(), ids[:, 1:][keep])
        self.seen_mems.append((model.training, batch.get("batch_index"), mems, out.mems))
        return ObjectiveOutput(loss=loss, terms={"lm": loss}, weights={"lm": 1.0},
                               n_tokens={"lm": int(keep.sum())}, mems=out.mems)
