"""Shared fixtures for the decoding tests: a random tiny XLNet (large init, eval, fp32) and a ragged batch."""

from __future__ import annotations

from hf_ref import random_model, tiny_config

SEP, PAD = 4, 5
SRC = [[7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17, 18, 19, 20]]  # different source lengths -> padding
LENS = [4, 6, 3]  # different target lengths -> padding


def model(vocab: int = 50, **kw):
    return random_model(tiny_config(vocab_size=vocab, **kw))
