"""``python cli.py bench backbone``: one PLM training step of plmgen's XLNet vs transformers' XLNetLMHeadModel.

Both sides get identical weights (exported with ``plmgen.hf.save_hf_xlnet``, loaded with ``from_pretrained``) and
identical inputs: B rows of T tokens, random Transformer-XL memory of M states per layer, random segment ids, and a
random factorization order with P predicted positions per row (plmgen: bool content/query masks + target_pos;
HF: the same order as ``perm_mask`` + one-hot ``target_mapping`` + ``token_type_ids``). The step is
``zero_grad → forward → cross-entropy on the query-stream logits → backward`` (no optimizer update: it is the same
code for both). Steps alternate plmgen/HF in one process; we report the median and range of ``steps`` (>= 5 by
default) steps after warm-up, in fp32 and under ``torch.autocast("cpu", dtype=torch.bfloat16)``, and each side's
executed FLOPs per step (``FlopCounterMode``): HF runs the query stream's attention over all T positions and maps it
to the P targets with ``target_mapping``, so it executes more FLOPs than plmgen for the same step and part of
plmgen's speed lead comes from not doing that work.

Peak memory: each side runs in a fresh Python subprocess. After model creation, inputs and one warm-up step,
we take the resident set size as the baseline, reset the kernel's high-water mark (``/proc/self/clear_refs`` 5),
run the steps and read ``VmHWM``; the peak is ``VmHWM − baseline`` (activations + gradients + temporaries of one
step). The subprocess runs with ``MALLOC_MMAP_THRESHOLD_=65536``: glibc then maps every tensor above 64 KiB on its
own and unmaps it when freed, so RSS follows the live tensors instead of heap fragmentation (with glibc's default
dynamic threshold, repeated runs of the same step differed by >2x; with it they agree to <0.1%). ``ratio peak_memory_vs_hf`` is the worse (larger) of the fp32 and bf16 ratios.

Legend: B batch, T length, M memory length, P predicted positions, d model dim, V vocab.
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from ..errors import UserError
from ..hf import save_hf_xlnet
from ..masks import perm_attention, ranks_from_order, stream_masks
from ..model import XLNet


@dataclass
class Spec:
    batch: int = 8
    seq_len: int = 256
    mem_len: int = 128
    num_predict: int = 43
    d_model: int = 256
    n_layer: int = 6
    n_head: int = 4
    d_inner: int = 1024
    vocab_size: int = 32000
    dropout: float = 0.1
    seed: int = 0

    def model_config(self) -> ModelConfig:
        return ModelConfig(vocab_size=self.vocab_size, d_model=self.d_model, n_layer=self.n_layer,
                           n_head=self.n_head, d_inner=self.d_inner, mem_len=self.mem_len, dropout=self.dropout,
                           dropatt=self.dropout)  # HF has one dropout rate for both


def make_inputs(s: Spec) -> dict:
    """The same training batch in both conventions."""
    g = torch.Generator().manual_seed(s.seed)
    B, T, M, P, d = s.batch, s.seq_len, s.mem_len, s.num_predict, s.d_model
    ids = torch.randint(0, s.vocab_size, (B, T), generator=g)
    seg = torch.randint(0, 2, (B, T), generator=g)
    order = torch.stack([torch.randperm(T, generator=g)[:P] for _ in range(B)])  # [B, P] targets in order
    rank = ranks_from_order(order, T)
    sm = stream_masks(rank, num_predict=P)
    mems = [torch.randn(B, M, d, generator=g) for _ in range(s.n_layer)]
    labels = torch.gather(ids, 1, sm.target_pos)  # [B, P]
    return dict(
        plm=dict(input_ids=ids, seg_ids=seg, content_mask=sm.content, query_mask=sm.query,
                 target_pos=sm.target_pos, mems=mems),
        hf=dict(input_ids=ids, token_type_ids=seg, perm_mask=(~perm_attention(rank)).float(),
                target_mapping=sm.target_mapping.float(), mems=[m.transpose(0, 1).contiguous() for m in mems],
                use_mems=True),
        labels=labels,
    )


def build_models(s: Spec, sides=("plm", "hf")) -> dict:
    torch.manual_seed(s.seed)
    plm = XLNet(s.model_config())
    models = {"plm": plm}
    if "hf" in sides:
        from transformers import XLNetLMHeadModel

        with tempfile.TemporaryDirectory() as tmp:
            save_hf_xlnet(plm, tmp)
            models["hf"] = XLNetLMHeadModel.from_pretrained(tmp)
    return {k: m.train() for k, m in models.items() if k in sides}


def loss_of(side: str, model, inputs: dict) -> torch.Tensor:
    if side == "plm":
        logits = model.logits(model(**inputs["plm"]).g)  # [B, P, V]
    else:
        logits = model(**inputs["hf"]).logits  # [B, P, V]
    return F.cross_entropy(logits.flatten(0, 1).float(), inputs["labels"].flatten())


def train_step(side: str, model, inputs: dict, bf16: bool) -> float:
    """zero_grad → forward → CE → backward; returns seconds."""
    t0 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = loss_of(side, model, inputs)
    loss.backward()
    return time.perf_counter() - t0


def check_same_loss(models: dict, inputs: dict) -> None:
    """Guard: in eval mode (no dropout) both sides must compute the same fp32 loss, or the timing means nothing."""
    with torch.no_grad():
        losses = {k: loss_of(k, m.eval(), inputs).item() for k, m in models.items()}
    for m in models.values():
        m.train()
    if not math.isclose(losses["plm"], losses["hf"], rel_tol=1e-4, abs_tol=1e-4):
        raise RuntimeError(f"plmgen and HF losses differ: {losses}")


def time_steps(models: dict, inputs: dict, steps: int, warmup: int, bf16: bool) -> dict[str, list[float]]:
    """Alternate plmgen/HF steps; seconds of every step after warm-up, per side."""
    times: dict[str, list[float]] = {k: [] for k in models}
    for i in range(warmup + steps):
        for side, model in models.items():
            dt = train_step(side, model, inputs, bf16)
            if i >= warmup:
                times[side].append(dt)
    return times


def step_flops(side: str, model, inputs: dict) -> int:
    """Matmul FLOPs one fp32 training step executes (forward + backward), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        train_step(side, model, inputs, False)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_step_memory_mb(spec: dict, side: str, bf16: bool, steps: int) -> float:
    """Runs in a fresh subprocess: peak RSS of training steps above the post-setup baseline, in MB."""
    s = Spec(**spec)
    model = build_models(s, sides=(side,))[side]
    inputs = make_inputs(s)
    train_step(side, model, inputs, bf16)  # warm-up: lazy init, thread pools, kernel caches
    model.zero_grad(set_to_none=True)
    gc.collect()
    base = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark to the current RSS
        f.write("5")
    for _ in range(steps):
        train_step(side, model, inputs, bf16)
    return (_rss_kb("VmHWM") - base) / 1024


def measure_memory(s: Spec, steps: int) -> dict[tuple[str, bool], float]:
    """One fresh interpreter per (side, dtype), run one after another, so no measurement inherits another's heap."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
           "MALLOC_MMAP_THRESHOLD_": "65536"}  # fixed threshold: freed tensors leave RSS at once (see module doc)
    out = {}
    for bf16 in (False, True):
        for side in ("plm", "hf"):
            args = json.dumps([asdict(s), side, bf16, steps])
            code = f"import json; from {__name__} import peak_step_memory_mb as f; print(json.dumps(f(*json.loads({args!r}))))"
            proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(f"memory subprocess ({side}, bf16={bf16}) failed:\n{proc.stderr[-2000:]}")
            out[side, bf16] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def run(steps: int = 5, warmup: int = 2, batch: int = 8, seq_len: int = 256, mem_len: int = 128,
        num_predict: int = 43, d_model: int = 256, n_layer: int = 6, n_head: int = 4, d_inner: int = 1024,
        vocab_size: int = 32000, memory_steps: int = 2, seed: int = 0, threads: int = 0) -> dict[str, float]:
    """Training-step throughput and peak memory of plmgen's XLNet vs transformers' XLNetLMHeadModel.

    Args:
        steps: timed steps per side and dtype (medians are reported).
        warmup: untimed steps per side and dtype before timing.
        batch: rows per batch (B).
        seq_len: tokens per row (T).
        mem_len: memory states per layer given to both models (M).
        num_predict: predicted positions per row (P, the query stream).
        d_model: model width.
        n_layer: layers.
        n_head: attention heads.
        d_inner: feed-forward width.
        vocab_size: vocabulary size (V).
        memory_steps: steps per peak-memory subprocess.
        seed: seed for weights and inputs.
        threads: torch intra-op threads for the timed steps (0 = torch's default). On a loaded machine, 1 thread
            gives steadier ratios: a parallel op there waits for its second thread to be scheduled.
    """
    _check_flags(steps, warmup, batch, seq_len, mem_len, num_predict, d_model, n_head, memory_steps, threads)
    s = Spec(batch=batch, seq_len=seq_len, mem_len=mem_len, num_predict=num_predict, d_model=d_model,
             n_layer=n_layer, n_head=n_head, d_inner=d_inner, vocab_size=vocab_size, seed=seed)
    models = build_models(s)
    inputs = make_inputs(s)
    check_same_loss(models, inputs)
    runs = {bf16: time_steps(models, inputs, steps, warmup, bf16) for bf16 in (False, True)}
    secs = {bf16: {k: statistics.median(v) for k, v in r.items()} for bf16, r in runs.items()}
    flops = {side: step_flops(side, m, inputs) for side, m in models.items()}
    del models
    mem = measure_memory(s, memory_steps)
    _print_table(s, steps, warmup, runs, secs, flops, mem)
    if min(mem.values()) <= 0:
        raise RuntimeError(f"peak memory deltas not measurable at this size (MB: {mem}); use a larger config")
    ratios = {
        "fp32_train_tokens_per_s_vs_hf": secs[False]["hf"] / secs[False]["plm"],
        "bf16_train_tokens_per_s_vs_hf": secs[True]["hf"] / secs[True]["plm"],
        "peak_memory_vs_hf": max(mem["plm", b] / mem["hf", b] for b in (False, True)),
    }
    for k, v in ratios.items():
        print(f"ratio {k}: {v:.3f}")
    return ratios


def _check_flags(steps, warmup, batch, seq_len, mem_len, num_predict, d_model, n_head, memory_steps, threads) -> None:
    """Refuse bad flags (one ``error:`` line each) and set the torch threads, in the order ``run`` always has."""
    for name, val in dict(steps=steps, batch=batch, seq_len=seq_len, num_predict=num_predict,
                          memory_steps=memory_steps).items():
        if val < 1:
            raise UserError(f"--{name} must be >= 1, got {val}")
    if threads < 0:
        raise UserError(f"--threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    if warmup < 0 or mem_len < 0:
        raise UserError(f"--warmup and --mem_len must be >= 0, got {warmup}, {mem_len}")
    if num_predict > seq_len:
        raise UserError(f"--num_predict ({num_predict}) must be <= --seq_len ({seq_len})")
    if d_model % n_head or (d_model // n_head) % 2:
        raise UserError(f"--d_model ({d_model}) must split into --n_head ({n_head}) heads of even size")


def _print_table(s: Spec, steps: int, warmup: int, runs: dict, secs: dict, flops: dict, mem: dict) -> None:
    """The per-side, per-dtype table: tokens/s, median and range of ms/step, executed GFLOP/step, peak MB."""
    batch, seq_len, mem_len, num_predict = s.batch, s.seq_len, s.mem_len, s.num_predict
    d_model, n_layer, n_head, d_inner, vocab_size = s.d_model, s.n_layer, s.n_head, s.d_inner, s.vocab_size
    tokens = s.batch * s.seq_len
    print(f"backbone training step (forward+backward, CE on the query stream): d_model {d_model}, {n_layer} layers, "
          f"{n_head} heads, d_inner {d_inner}, vocab {vocab_size}; B={batch} T={seq_len} M={mem_len} "
          f"P={num_predict}; {torch.get_num_threads()} threads; medians of {steps} steps after {warmup} warm-up")
    print(f"{'side':<8}{'dtype':<6}{'tokens/s':>10}{'ms/step':>10}{'ms range':>16}{'GFLOP/step':>12}{'peak MB':>10}")
    for bf16 in (False, True):
        for side, name in (("plm", "plmgen"), ("hf", "HF")):
            t, r = secs[bf16][side], runs[bf16][side]
            span = f"{min(r) * 1e3:.1f}-{max(r) * 1e3:.1f}"
            print(f"{name:<8}{'bf16' if bf16 else 'fp32':<6}{tokens / t:>10.0f}{t * 1e3:>10.1f}{span:>16}"
                  f"{flops[side] / 1e9:>12.3f}{mem[side, bf16]:>10.1f}")
    print(f"HF executes {flops['hf'] / flops['plm']:.2f}x plmgen's FLOPs per step (executed matmuls, FlopCounterMode): "
          f"it runs the query stream's attention at all T={seq_len} positions and picks the P={num_predict} targets "
          f"with target_mapping, where plmgen attends from the P query rows only; part of the speed ratio is that "
          f"work, not faster kernels.")
