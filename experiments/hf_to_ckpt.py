"""Turn a Hugging Face XLNet directory into a plmgen checkpoint that ``train --init_from`` accepts.

    python experiments/hf_to_ckpt.py --hf path/to/xlnet-base-cased --out runs/xlnet-base/checkpoints/last.ckpt
    python cli.py train --config experiments/configs/finetune-small-cpu.yaml --init_from runs/xlnet-base/checkpoints/last.ckpt

The backbone comes from ``plmgen.hf.load_hf_xlnet``; the directory's ``spiece.model`` (or ``--tokenizer``) is
copied next to the checkpoint's folder, where ``load_checkpoint`` looks for it. The checkpoint records objective
``plm`` (XLNet's own), so fine-tuning with ``seq2seq`` takes the backbone weights only.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def hf_to_ckpt(hf: str, out: str, tokenizer: str | None = None) -> Path:
    """Write a plmgen checkpoint (weights_only-loadable) for the HF XLNet in ``hf``; returns its path.

    Args:
        hf: Hugging Face XLNet directory (config.json + model.safetensors or pytorch_model.bin).
        out: checkpoint path to write (its folder's parent becomes the run folder holding tokenizer.model).
        tokenizer: sentencepiece model (default: hf/spiece.model).
    """
    import torch

    from plmgen.config import ExperimentConfig, ObjectiveConfig
    from plmgen.errors import UserError
    from plmgen.hf import load_hf_xlnet
    from plmgen.tokenizer import Tokenizer

    model = load_hf_xlnet(hf)
    tok_src = Path(tokenizer) if tokenizer else Path(hf) / "spiece.model"
    tok = Tokenizer.load(tok_src)  # UserError if missing or lacking XLNet's specials
    if tok.vocab_size != model.cfg.vocab_size:
        raise UserError(f"--tokenizer {tok_src} has {tok.vocab_size} pieces but {hf} has vocab_size {model.cfg.vocab_size}")
    out_path = Path(out)
    run_dir = out_path.resolve().parent.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tok_src, run_dir / "tokenizer.model")
    cfg = ExperimentConfig(name=run_dir.name, model=model.cfg, objective=ObjectiveConfig(name="plm"),
                           tokenizer=str(run_dir / "tokenizer.model"))
    state = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
             "plmgen": {"config": dataclasses.asdict(cfg), "tokenizer": str(run_dir / "tokenizer.model")}}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(out_path)
    print(out_path)
    return out_path


if __name__ == "__main__":
    from plmgen.errors import run_cli

    sys.exit(run_cli(hf_to_ckpt, as_positional=False))
