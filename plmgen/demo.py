"""The README demo (backbone stage): build or load an XLNet, round-trip it through the HF format, and run a
two-stream forward along a random factorization order, printing each prediction and what it could see."""

from __future__ import annotations

import tempfile

import torch
from rich.console import Console
from rich.table import Table

from .config import ModelConfig
from .hf import load_hf_xlnet, save_hf_xlnet
from .masks import ranks_from_order, stream_masks
from .model import XLNet


def demo(hf_checkpoint: str | None = None, length: int = 12, num_predict: int = 4, seed: int = 0) -> None:
    """Run the backbone demo.

    Args:
        hf_checkpoint: a Hugging Face XLNet checkpoint directory to load (default: a random small XLNet).
        length: sequence length of the random input.
        num_predict: how many positions the query stream predicts (the last ones of a random order).
        seed: random seed.
    """
    console = Console()
    torch.manual_seed(seed)
    model = load_hf_xlnet(hf_checkpoint) if hf_checkpoint else XLNet(ModelConfig.named("small", vocab_size=1000))
    with tempfile.TemporaryDirectory() as d:  # HF export -> import round trip must be lossless
        save_hf_xlnet(model, d)
        back = load_hf_xlnet(d)
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    console.print(f"HF export/import round trip lossless: {same}")
    model.eval()

    ids = torch.randint(10, model.cfg.vocab_size, (1, length))
    order = torch.randperm(length)[None, -num_predict:]  # predict the last num_predict of a random order
    rank = ranks_from_order(order, length)
    sm = stream_masks(rank)
    with torch.no_grad():
        out = model(ids, content_mask=sm.content, query_mask=sm.query, target_pos=sm.target_pos)
        probs = model.logits(out.g).softmax(-1)[0]
    table = Table(title="query-stream predictions along a random factorization order")
    for col in ("step", "position", "true id", "predicted id", "p(pred)", "p(true)", "sees positions"):
        table.add_column(col)
    for p in range(num_predict):
        pos = int(sm.target_pos[0, p])
        seen = [j for j in range(length) if sm.query[0, p, j]]
        pred = int(probs[p].argmax())
        table.add_row(str(p), str(pos), str(int(ids[0, pos])), str(pred), f"{probs[p, pred]:.4f}",
                      f"{probs[p, ids[0, pos]]:.4f}", " ".join(map(str, seen)))
    console.print(table)
