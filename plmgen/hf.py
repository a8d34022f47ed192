"""Hugging Face XLNet interop: the only place HF conventions live.

- ``load_hf_xlnet(path)``: an HF XLNet checkpoint directory (config.json + model.safetensors or pytorch_model.bin)
  -> plmgen ``XLNet`` (weights loaded safely: safetensors, or ``torch.load(weights_only=True)``).
- ``save_hf_xlnet(model, path)``: the reverse; ``transformers.XLNetLMHeadModel.from_pretrained`` loads it.
- ``forward_hf(model, ...)``: a forward taking HF's conventions, defined in ``plmgen.hf_conventions`` (which does
  not import the model, so ``XLNet.forward_hf`` can call it) and re-exported here.

HF stores projections as [d_model, n_head, d_head] tensors used with einsum; plmgen uses nn.Linear weights
[out, in] with fused key/value. Neither library is imported here except torch/safetensors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from .config import ModelConfig
from .errors import UserError
from .files import atomic_write_text, fsync_file
from .hf_conventions import forward_hf  # noqa: F401  (re-exported: plmgen.hf.forward_hf)
from .model import XLNet, check_model_limits, check_state_dict

_CFG_KEYS = ("vocab_size", "d_model", "n_layer", "n_head", "d_inner", "ff_activation", "attn_type",
             "initializer_range", "layer_norm_eps", "dropout", "clamp_len", "same_length")


def config_from_hf(hf: dict) -> ModelConfig:
    """The architecture in an HF config (its ``reuse_len``/``bi_data`` are pre-training data settings in plmgen:
    ``data.reuse_len``/``data.bi_data``, not part of the model)."""
    kw = {k: hf[k] for k in _CFG_KEYS if k in hf}
    kw["mem_len"] = int(hf.get("mem_len") or 0)
    kw["dropatt"] = float(hf.get("dropout", 0.1))  # HF uses one dropout rate for both
    kw["untie_r"] = True  # HF keeps per-layer biases
    return ModelConfig(**kw)


def config_to_hf(cfg: ModelConfig, reuse_len: int = 0, bi_data: bool = False) -> dict:
    """An HF config.json for the architecture; HF also keeps the data settings ``reuse_len``/``bi_data`` there."""
    d = {k: getattr(cfg, k) for k in _CFG_KEYS}
    d.update(model_type="xlnet", architectures=["XLNetLMHeadModel"], d_head=cfg.d_head, untie_r=True, bi_data=bi_data,
             mem_len=cfg.mem_len or None, reuse_len=reuse_len or None, use_mems_eval=True,
             use_mems_train=False, pad_token_id=5, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    return d


def state_dict_from_hf(sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """HF parameter names/layouts -> plmgen ``XLNet.state_dict()``."""
    d = cfg.d_model
    g = lambda name: sd[f"transformer.{name}"]  # noqa: E731
    lin = lambda w: w.reshape(d, -1).t().contiguous()  # [d, n, dh] einsum weight -> Linear [n*dh, d]  # noqa: E731
    out = {"word_embedding.weight": g("word_embedding.weight"), "mask_emb": g("mask_emb").reshape(d),
           "lm_bias": sd["lm_loss.bias"]}
    for name in ("r_w_bias", "r_r_bias", "r_s_bias"):
        out[name] = torch.stack([g(f"layer.{i}.rel_attn.{name}") for i in range(cfg.n_layer)])
    for i in range(cfg.n_layer):
        a, o = f"layer.{i}.rel_attn.", f"layers.{i}.rel_attn."
        out[o + "q.weight"] = lin(g(a + "q"))
        out[o + "kv.weight"] = torch.cat([lin(g(a + "k")), lin(g(a + "v"))])
        out[o + "r.weight"] = lin(g(a + "r"))
        out[o + "o.weight"] = g(a + "o").reshape(d, -1).contiguous()  # "ibnd,hnd->ibh": Linear [h, n*dh]
        out[o + "seg_embed"] = g(a + "seg_embed")
        for p in ("weight", "bias"):
            out[o + f"layer_norm.{p}"] = g(a + f"layer_norm.{p}")
            for sub in ("layer_1", "layer_2", "layer_norm"):
                out[f"layers.{i}.ff.{sub}.{p}"] = g(f"layer.{i}.ff.{sub}.{p}")
    return out


def state_dict_to_hf(model: XLNet) -> dict[str, Tensor]:
    cfg, sd = model.cfg, model.state_dict()
    d, H, D = cfg.d_model, cfg.n_head, cfg.d_head
    heads = lambda w: w.t().reshape(d, H, D).contiguous()  # noqa: E731
    out = {"transformer.word_embedding.weight": sd["word_embedding.weight"],
           "transformer.mask_emb": sd["mask_emb"].reshape(1, 1, d), "lm_loss.bias": sd["lm_bias"]}
    for i in range(cfg.n_layer):
        a, o = f"transformer.layer.{i}.rel_attn.", f"layers.{i}.rel_attn."
        k, v = sd[o + "kv.weight"].chunk(2)
        out[a + "q"], out[a + "k"], out[a + "v"] = heads(sd[o + "q.weight"]), heads(k), heads(v)
        out[a + "r"] = heads(sd[o + "r.weight"])
        out[a + "o"] = sd[o + "o.weight"].reshape(d, H, D).contiguous()
        out[a + "seg_embed"] = sd[o + "seg_embed"]
        for name, bias in zip(("r_w_bias", "r_r_bias", "r_s_bias"), model.biases(i)):
            out[a + name] = bias.detach().clone()
        for p in ("weight", "bias"):
            out[a + f"layer_norm.{p}"] = sd[o + f"layer_norm.{p}"]
            for sub in ("layer_1", "layer_2", "layer_norm"):
                out[f"transformer.layer.{i}.ff.{sub}.{p}"] = sd[f"layers.{i}.ff.{sub}.{p}"]
    return {k: t.detach().contiguous().clone() for k, t in out.items()}


def load_hf_xlnet(path: str | os.PathLike) -> XLNet:
    """Read an HF XLNet checkpoint directory into a plmgen model (no transformers import needed)."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"{cfg_file}: not found (expected a Hugging Face XLNet checkpoint directory)")
    try:
        hf_cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{cfg_file}: not valid UTF-8 JSON ({e})") from None
    if not isinstance(hf_cfg, dict):
        raise UserError(f"{cfg_file}: expected a JSON object, got {type(hf_cfg).__name__}")
    if hf_cfg.get("model_type") not in (None, "xlnet"):
        raise UserError(f"{cfg_file}: model_type is {hf_cfg.get('model_type')!r}, not 'xlnet'")
    try:
        cfg = config_from_hf(hf_cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{cfg_file}: not a usable XLNet config ({e})") from None
    check_model_limits(cfg, str(cfg_file))
    sd = _read_hf_weights(path)
    if not any(k.startswith("transformer.") for k in sd):  # bare XLNetModel checkpoints lack the prefix
        sd = {f"transformer.{k}": v for k, v in sd.items()}
    sd.setdefault("lm_loss.bias", torch.zeros(cfg.vocab_size))
    try:
        ours = state_dict_from_hf(sd, cfg)
    except KeyError as e:
        raise UserError(f"{path}: checkpoint lacks parameter {e.args[0]} for a {cfg.n_layer}-layer XLNet") from None
    with torch.device("meta"):
        check_state_dict(str(path), XLNet(cfg), ours)
    model = XLNet(cfg)
    model.load_state_dict(ours)
    return model


def _read_hf_weights(path: Path) -> dict:
    """The weights file of an HF folder, read without running code; UserError for a missing or damaged one."""
    try:
        if (path / "model.safetensors").is_file():
            from safetensors.torch import load_file

            return load_file(str(path / "model.safetensors"))
        if (path / "pytorch_model.bin").is_file():
            sd = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
            if not isinstance(sd, dict):
                raise ValueError(f"expected a dict of tensors, got {type(sd).__name__}")
            return sd
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise UserError(f"{path}: damaged weights file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    raise UserError(f"{path}: neither model.safetensors nor pytorch_model.bin found")


def save_hf_xlnet(model: XLNet, path: str | os.PathLike, reuse_len: int = 0, bi_data: bool = False) -> None:
    """Write config.json + model.safetensors that ``XLNetLMHeadModel.from_pretrained(path)`` loads (``reuse_len``,
    ``bi_data``: the pre-training data settings HF keeps in its config)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / ".model.safetensors.tmp"
    save_file(state_dict_to_hf(model), str(tmp), metadata={"format": "pt"})
    fsync_file(tmp)
    os.replace(tmp, path / "model.safetensors")
    atomic_write_text(path / "config.json", json.dumps(config_to_hf(model.cfg, reuse_len, bi_data), indent=2))
