"""``python cli.py bench train``: training tokens/s per objective in fp32 and bf16, model-FLOPs utilisation and the
share of the step spent sampling masks.

One training step is what PLMModule does: objective forward (with the previous step's mems) -> backward -> grad
clipping -> AdamW step, on batches from the real pre-training pipeline (random token text, so no data is needed)
or, for a ``parallel`` experiment, random token pairs through the real collate. Steps run back to back in one
process; we report the median over ``steps`` timed steps after ``warmup`` steps. The bf16 step runs under
``torch.autocast(device, dtype=torch.bfloat16)`` (what ``train.precision bf16``, Lightning's ``bf16-mixed``, does).

FLOPs are counted as executed: one extra, untimed forward + backward per batch shape runs under
``torch.utils.flop_counter.FlopCounterMode``, which adds up every matmul the step dispatches (projections, FFN,
attention products, the positional table, the LM head; forward and backward, whatever the objective runs: a
joint mixture's every forward, memory keys, the query stream, and not the backward a split last block skips).
Elementwise work is not counted, as usual for MFU. MFU = executed FLOP/s / the machine's practical matmul peak.
The peak's size is the best of a small sweep of square bf16 matmuls, measured before and after the steps in the
same run. On a shared machine the speed drifts by ±10 % within seconds (a neighbour's memory traffic slows the
step's elementwise passes and the matmuls alike), so a reference measured a minute away misjudges a step. The
bf16 steps therefore alternate with short matmul windows of that size: step k is judged against the better of the
windows just before and just after it, and the MFU is the median of these per-step ratios (the standard for every
speed ratio here: medians of alternating timings). The MFU against the run's single best window (before, after or
between the steps), the most pessimistic reference, is printed beside it.

Mask share: before each timed step the objective's ``sample`` (everything it draws before the backbone runs) is
timed on the same batch; the share is its median over the step's median (the step samples again itself).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..batch import Batch
from ..config import ExperimentConfig
from ..errors import UserError

DEFAULT_OBJECTIVES = ("plm", "dae", "mask-plm", "mass")
MATMUL_SIZES = {"cuda": (4096, 8192, 16384), "cpu": (512, 1024, 2048)}


def _sync(device: str):
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def matmul_rate(device: str, dtype=torch.bfloat16, n: int = 2048, seconds: float = 0.3, windows: int = 2) -> float:
    """FLOP/s of an n x n x n matmul in ``dtype``: the best of ``windows`` timing windows."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = _sync(device)
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


def matmul_peak(device: str, sizes: tuple[int, ...] | None = None) -> dict[int, float]:
    """bf16 matmul FLOP/s per size of the sweep (the peak is the best of them)."""
    return {n: matmul_rate(device, n=n) for n in sizes or MATMUL_SIZES.get(device, MATMUL_SIZES["cpu"])}


def executed_flops(model, objective, batch: Batch, mems, bf16: bool, device: str) -> int:
    """Matmul FLOPs one training step executes (forward + backward), counted by FlopCounterMode; grads cleared."""
    counter = FlopCounterMode(display=False)
    amp = torch.autocast(device, dtype=torch.bfloat16) if bf16 else nullcontext()
    with counter:
        with amp:
            out = objective(model, batch, mems=mems)
        out.loss.backward()
    model.zero_grad(set_to_none=True)
    objective.zero_grad(set_to_none=True)
    return counter.get_total_flops()


class _RandomPairs:
    """Batch k: random token pairs through the real parallel collate, lengths up to the experiment's limits."""

    def __init__(self, cfg: ExperimentConfig, seed: int = 0):
        from ..data.parallel import split_limits

        self.cfg, self.seed = cfg, seed
        self.max_src, self.max_tgt = split_limits(cfg.data.seq_len, cfg.data.max_src_len, cfg.data.max_tgt_len)

    def batch(self, k: int) -> dict:
        from ..data.parallel import pair_batch

        rng = np.random.default_rng([self.seed, k])
        B, V = self.cfg.data.batch_size, self.cfg.model.vocab_size
        side = lambda most: [rng.integers(9, V, rng.integers(most // 2, most + 1)).tolist() for _ in range(B)]  # noqa: E731
        return pair_batch(side(self.max_src), side(self.max_tgt), sep_id=4, pad_id=5)


def _random_batches(cfg: ExperimentConfig, n_tokens: int, seed: int = 0):
    from ..data.pretrain import PretrainBatches, TokenStream

    if cfg.data.kind == "parallel":
        return _RandomPairs(cfg, seed)
    rng = np.random.default_rng(seed)
    ids = rng.integers(9, cfg.model.vocab_size, n_tokens)
    sent = np.cumsum(rng.random(n_tokens) < 1 / 20)  # "sentences" of ~20 tokens for the A/B cuts
    d = cfg.data
    return PretrainBatches(TokenStream(ids, sent), batch_size=d.batch_size, seq_len=d.seq_len,
                           reuse_len=d.reuse_len, sep_id=4, cls_id=3, nsp_true_ratio=d.nsp_true_ratio,
                           ab_layout=d.ab_layout, bi_data=d.bi_data)


def measure(cfg: ExperimentConfig, device: str, bf16: bool, steps: int, warmup: int, window: int = 0) -> dict:
    """Median seconds per training step and of its mask sampling, tokens/s and executed FLOPs per step for one
    objective and precision. ``window`` > 0: an n x n bf16 matmul window (:func:`matmul_rate`) is timed before
    the first timed step and after every timed step; ``ref`` is, per step, the better of its two windows."""
    from ..lit import make_optimizer
    from ..model import XLNet
    from ..train import make_objective

    torch.manual_seed(0)
    model = XLNet(cfg.model).to(device).train()
    objective = make_objective(cfg, None).to(device).train()
    opt = make_optimizer([model, objective], lr=1e-4, weight_decay=0.01)  # what PLMModule trains with
    data = _random_batches(cfg, n_tokens=(steps + warmup + 2) * cfg.data.batch_size * cfg.data.seq_len * 2)
    amp = torch.autocast(device, dtype=torch.bfloat16) if bf16 else nullcontext()
    sync = _sync(device)
    mems, times, sample_times, flops, counted, tokens, windows = None, [], [], [], {}, [], []
    for k in range(warmup + steps):
        batch = {key: v.to(device) if torch.is_tensor(v) else v for key, v in data.batch(k).items()}
        shape = (tuple(batch["input_ids"].shape), batch.get("tgt_len_max"), mems is None)
        if k >= warmup and shape not in counted:
            counted[shape] = executed_flops(model, objective, batch, mems, bf16, device)
        if window and k == warmup:
            windows.append(matmul_rate(device, n=window, seconds=0.15, windows=1))  # before the first timed step
        sync()
        t0 = time.perf_counter()
        with amp:
            objective.sample(batch)
        sync()
        t1 = time.perf_counter()
        with amp:
            out = objective(model, batch, mems=mems)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(objective.parameters()), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if k >= warmup:
            times.append(time.perf_counter() - t1)
            sample_times.append(t1 - t0)
            flops.append(counted[shape])
            tokens.append(batch["input_ids"].numel())
        mems = out.mems if objective.uses_mems else None
        if window and k >= warmup:
            windows.append(matmul_rate(device, n=window, seconds=0.15, windows=1))  # after every timed step
    sec = statistics.median(times)
    rate = lambda xs: statistics.median(x / t for x, t in zip(xs, times))  # noqa: E731  per-step rates
    res = {"sec": sec, "tokens_per_s": rate(tokens), "flops": statistics.median(flops), "flop_s": rate(flops),
           "mask_share": statistics.median(sample_times) / sec, "times": times, "windows": windows}
    if window:
        res["ref"] = [max(a, b) for a, b in zip(windows, windows[1:])]  # per timed step
        res["mfu_adjacent"] = statistics.median(f / t / r for f, t, r in zip(flops, times, res["ref"]))
    return res


PACKAGED = Path(__file__).parents[1] / "configs"  # configs shipped inside the package


def run(experiment: str | None = None, objectives: str | None = None, steps: int = 6, warmup: int = 2,
        batch: int | None = None, device: str | None = None) -> dict:
    """Print tokens/s per objective (fp32, bf16), executed TFLOP/s, MFU against the matmul peak measured in the
    same run, the mask share of the step, and the bf16/fp32 speed ratio. ``objectives``: default plm,dae,mask-plm,
    mass for a pre-training experiment, the experiment's own objective for a parallel one. ``experiment``: a YAML
    path (default: the packaged small-cpu.yaml)."""
    experiment = experiment or str(PACKAGED / "small-cpu.yaml")
    if not Path(experiment).is_file():
        raise UserError(f"--experiment {experiment}: no such file")
    cfg = ExperimentConfig.from_yaml(experiment)
    if batch:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=batch))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if objectives is None:
        objectives = cfg.objective.name if cfg.data.kind == "parallel" else ",".join(DEFAULT_OBJECTIVES)
    names = [n.strip() for n in objectives.split(",") if n.strip()]
    if not names or steps < 1:
        raise UserError("bench train: need at least one objective and --steps >= 1")
    m, d = cfg.model, cfg.data
    print(f"bench train: {experiment} d={m.d_model} L={m.n_layer} V={m.vocab_size} B={d.batch_size} T={d.seq_len} "
          f"M={m.mem_len} R={d.reuse_len} device={device} threads={torch.get_num_threads()}")
    before = matmul_peak(device)
    size = max(before, key=before.get)  # the sweep's best size times the windows between the bf16 steps
    results = {}
    for name in names:
        ocfg = dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, name=name))
        results[name] = dict(fp32=measure(ocfg, device, False, steps, warmup),
                             bf16=measure(ocfg, device, True, steps, warmup, window=size))
    after = matmul_peak(device)
    windows = [w for r in results.values() for w in r["bf16"]["windows"]]
    peak = max(*before.values(), *after.values(), *windows)
    sweep = lambda r: " ".join(f"{n}:{v / 1e12:.3f}" for n, v in r.items())  # noqa: E731
    print(f"bf16 matmul TFLOP/s by size, before: {sweep(before)}  after: {sweep(after)}  windows of {size}: "
          f"{min(windows) / 1e12:.3f}-{max(windows) / 1e12:.3f}  peak {peak / 1e12:.3f}")
    for name, r in results.items():
        fp32, bf16 = r["fp32"], r["bf16"]
        r["mfu"], r["mfu_vs_peak"] = bf16["mfu_adjacent"], bf16["flop_s"] / peak
        print(f"{name:<9} fp32 {fp32['tokens_per_s']:9.0f} tok/s   bf16 {bf16['tokens_per_s']:9.0f} tok/s   "
              f"executed {bf16['flops'] / 1e9:.2f} GFLOP/step {bf16['flop_s'] / 1e12:.3f} TFLOP/s   "
              f"mfu {r['mfu']:.3f} (vs the run's peak {r['mfu_vs_peak']:.3f})   "
              f"masks {100 * bf16['mask_share']:.1f}% of the bf16 step")
    first = results[names[0]]
    print(f"mfu bf16: {first['mfu']:.3f}")  # per step against the adjacent matmul windows, median
    print(f"mask share bf16: {first['bf16']['mask_share']:.3f}")
    print(f"ratio bf16_vs_fp32_tokens_per_s: {first['bf16']['tokens_per_s'] / first['fp32']['tokens_per_s']:.2f}")
    return results
