"""Test helpers: a random tiny plmgen XLNet and the same weights in transformers' XLNetLMHeadModel."""

from __future__ import annotations

import tempfile

import torch

from plmgen.config import ModelConfig
from plmgen.hf import save_hf_xlnet
from plmgen.model import XLNet


def tiny_config(**kw) -> ModelConfig:
    base = dict(vocab_size=97, d_model=32, n_layer=3, n_head=4, d_inner=48, dropout=0.0, dropatt=0.0, mem_len=0,
                initializer_range=0.3)  # large weights: every attention term moves the logits
    base.update(kw)
    return ModelConfig(**base)


def random_model(cfg: ModelConfig, seed: int = 0) -> XLNet:
    torch.manual_seed(seed)
    model = XLNet(cfg)
    with torch.no_grad():  # non-trivial biases/LayerNorms so parity checks every term
        for name, p in model.named_parameters():
            if p.dim() == 1 or "bias" in name or "seg_embed" in name or "mask_emb" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def hf_twin(model: XLNet, reuse_len: int = 0, bi_data: bool = False):
    """The same weights in transformers' XLNetLMHeadModel, through our own exporter (``reuse_len``/``bi_data``:
    the data settings HF keeps in its model config)."""
    from transformers import XLNetLMHeadModel

    with tempfile.TemporaryDirectory() as d:
        save_hf_xlnet(model, d, reuse_len=reuse_len, bi_data=bi_data)
        hf = XLNetLMHeadModel.from_pretrained(d)
    return hf.eval()
