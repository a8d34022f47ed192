"""``python cli.py bench train``: training tokens/s per objective in fp32 and bf16, and model-FLOPs utilisation.

One training step is what PLMModule does: objective forward (with the previous step's mems) -> backward -> grad
clipping -> AdamW step, on batches from the real pre-training pipeline (random token text, so no data is needed).
Steps run back to back in one process; we report the median over ``steps`` timed steps after ``warmup`` steps.
The bf16 step runs under ``torch.autocast(device, dtype=torch.bfloat16)`` (what Lightning's ``bf16-mixed`` does).

Model FLOPs per step (training = 3x forward: forward + 2x for backward), counted from the shapes the backbone really
ran (recorded by a hook on layer 0's attention): rows I (T content + P query-stream rows, or however an objective
lays them out), keys J (memory + segment), positional-table rows R (both tables with bi_data); per layer
    projections  2·I·d·d (q) + 2·T·d·2d (k, v from content only) + 2·I·d·d (o) + 2·R·d·d (W_kR of the table)
    FFN          2·I·d·d_inner·2
    attention    2·I·J·d (q·k) + 2·I·J·d (q·r, gathered) + 2·I·J·d (p·v)
plus the LM head 2·n_pred·d·V on the predicted tokens (n_pred from the objective's ``n_tokens``). Tokens/s counts
input tokens (B·T). MFU = bf16 model FLOP/s / the bf16 matmul rate measured in the same run (a large bf16 matmul),
so it is the share of the machine's practical peak that the training step reaches.
"""

from __future__ import annotations

import statistics
from pathlib import Path
import time
from contextlib import nullcontext

import numpy as np
import torch

from ..config import ExperimentConfig
from ..errors import UserError

DEFAULT_OBJECTIVES = ("plm", "dae", "mask-plm", "mass")


def matmul_rate(device: str, dtype=torch.bfloat16, n: int | None = None, seconds: float = 0.5, windows: int = 3) -> float:
    """FLOP/s of an n x n x n matmul in ``dtype``: the best of ``windows`` timing windows (the practical peak the
    MFU is measured against; the best window, not the mean, so a noisy moment cannot flatter the MFU)."""
    n = n or (8192 if device == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best = 0.0
    for _ in range(windows):
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            reps += 1
            sync()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def step_flops(shapes: dict, cfg, n_pred: int) -> float:
    """Model FLOPs of one training step from the recorded forward shapes (formula in the module docstring)."""
    B, T, I, J, R = shapes["B"], shapes["T"], shapes["I"], shapes["J"], shapes["R"]
    d, di, V, L = cfg.d_model, cfg.d_inner, cfg.vocab_size, cfg.n_layer
    per_layer = B * (2 * I * d * d + 2 * T * d * 2 * d + 2 * I * d * d + 4 * I * d * di + 6 * I * J * d) + 2 * R * d * d
    return 3.0 * (L * per_layer + 2 * n_pred * d * V)


def _random_batches(cfg: ExperimentConfig, n_tokens: int, seed: int = 0):
    from ..data.pretrain import PretrainBatches, TokenStream

    rng = np.random.default_rng(seed)
    ids = rng.integers(9, cfg.model.vocab_size, n_tokens)
    sent = np.cumsum(rng.random(n_tokens) < 1 / 20)  # "sentences" of ~20 tokens for the A/B cuts
    d = cfg.data
    return PretrainBatches(TokenStream(ids, sent), batch_size=d.batch_size, seq_len=d.seq_len,
                           reuse_len=cfg.model.reuse_len, sep_id=4, cls_id=3, nsp_true_ratio=d.nsp_true_ratio,
                           ab_layout=d.ab_layout, bi_data=cfg.model.bi_data)


def measure(cfg: ExperimentConfig, device: str, bf16: bool, steps: int, warmup: int) -> dict:
    """Median seconds per training step, tokens/s and model FLOPs per step for one objective and precision."""
    from ..lit import make_optimizer
    from ..model import XLNet
    from ..train import make_objective

    torch.manual_seed(0)
    model = XLNet(cfg.model).to(device).train()
    objective = make_objective(cfg, None).to(device).train()
    opt = make_optimizer([model, objective], lr=1e-4, weight_decay=0.01)  # what PLMModule trains with
    data = _random_batches(cfg, n_tokens=(steps + warmup + 2) * cfg.data.batch_size * cfg.data.seq_len * 2)
    shapes: dict = {}

    def record(_module, args):
        # Layer 0's attention sees every path (the full forward and objectives that drive the layers themselves).
        x, k, rk = args[0], args[1], args[3]
        shapes.update(B=x.shape[0], I=x.shape[1], J=k.shape[2], R=rk.shape[-2] * (2 if rk.dim() == 4 else 1))

    hook = model.layers[0].rel_attn.register_forward_pre_hook(record)
    amp = torch.autocast(device, dtype=torch.bfloat16) if bf16 else nullcontext()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    mems, times, flops = None, [], []
    for k in range(warmup + steps):
        batch = {key: v.to(device) if torch.is_tensor(v) else v for key, v in data.batch(k).items()}
        sync()
        t0 = time.perf_counter()
        with amp:
            out = objective(model, batch, mems=mems)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(objective.parameters()), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
            n_pred = sum(v for name, v in out.n_tokens.items() if name != "nsp")
            flops.append(step_flops({**shapes, "T": batch["input_ids"].shape[1]}, cfg.model, n_pred))
        mems = out.mems if objective.uses_mems else None
    hook.remove()
    sec = statistics.median(times)
    tokens = batch["input_ids"].numel()
    return {"sec": sec, "tokens_per_s": tokens / sec, "flops": statistics.median(flops)}


def run(experiment: str = "experiments/configs/small-cpu.yaml", objectives: str = ",".join(DEFAULT_OBJECTIVES),
        steps: int = 6, warmup: int = 2, batch: int | None = None, device: str | None = None) -> dict:
    """Print tokens/s per objective (fp32, bf16), the bf16 matmul rate, MFU and the bf16/fp32 speed ratio."""
    import dataclasses

    if not Path(experiment).is_file():
        raise UserError(f"--experiment {experiment}: no such file")
    cfg = ExperimentConfig.from_yaml(experiment)
    if batch:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=batch))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    names = [n.strip() for n in objectives.split(",") if n.strip()]
    if not names or steps < 1:
        raise UserError("bench train: need at least one objective and --steps >= 1")
    peak = matmul_rate(device)
    m, d = cfg.model, cfg.data
    print(f"bench train: {experiment} d={m.d_model} L={m.n_layer} V={m.vocab_size} B={d.batch_size} T={d.seq_len} "
          f"M={m.mem_len} R={m.reuse_len} device={device} threads={torch.get_num_threads()}")
    print(f"bf16 matmul rate: {peak / 1e12:.3f} TFLOP/s")
    results = {}
    for name in names:
        ocfg = dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, name=name))
        fp32 = measure(ocfg, device, False, steps, warmup)
        bf16 = measure(ocfg, device, True, steps, warmup)
        mfu = bf16["flops"] / bf16["sec"] / peak
        results[name] = dict(fp32=fp32, bf16=bf16, mfu=mfu)
        print(f"{name:<9} fp32 {fp32['tokens_per_s']:9.0f} tok/s   bf16 {bf16['tokens_per_s']:9.0f} tok/s   "
              f"model {bf16['flops'] / bf16['sec'] / 1e12:.3f} TFLOP/s   mfu {mfu:.3f}")
    first = results[names[0]]
    print(f"mfu bf16: {first['mfu']:.3f}")
    print(f"ratio bf16_vs_fp32_tokens_per_s: {first['bf16']['tokens_per_s'] / first['fp32']['tokens_per_s']:.2f}")
    return results
