"""Left-to-right decoding of ``prefix-lm`` checkpoints: greedy, beam, sampling, with an exact incremental KV cache.

Legend: B examples, W beams (beam width), R rows (B·W), M memory slots, C context slots (source tail + <sep>),
L target slots, J = M + C + L key slots, H heads, D head dim, d model dim, V vocab.

The model is the one ``plmgen.objectives.prefix_lm`` trains: source + ``<sep>`` see each other, target token t sees
the prefix and the target up to itself, and its *content* state predicts token t + 1. Decoding encodes the context
once (the ``<sep>`` row predicts the first token), then feeds one token per step and reads the next prediction from
that token's own row. Output stops at ``</s>`` (banned before ``min_len``, forced at ``max_len``).

Why the cache is exact: under the causal target mask a filled token's content state depends only on the context
and the tokens before it, all fixed when it is filled; later tokens are never visible to it. So every layer's
keys/values of the context and of each fed token, computed once, are what a full forward would compute at any
later step. ``Recompute`` is that full forward (the training masks of ``prefix_lm_masks``, re-run every step) —
the reference the tests compare against. Positions and slots follow ``cache.IncrementalCache``: memory state m at
m, the final context from M_b on, target token t right after the context; only distances enter the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..config import DecodeConfig
from ..errors import UserError
from ..model import Rows, XLNet
from .cache import (DecodeLayout, build_layout, encode_context, log_probs, model_device, recompute_positions,
                    target_positions)
from .orders import example_generator
from .search import Hypothesis, inference, pick_tokens
from .state import Bans

LEN_RATIO, LEN_EXTRA = 2, 10  # default longest output: LEN_RATIO · source tokens + LEN_EXTRA (and the config's cap)


class Cache:
    """Exact incremental prefix-LM state for rows of a ``DecodeLayout``; ``first`` = log-probs of target token 0.

    The context is encoded once into a ``KVCache`` (``cache.encode_context``, memory included), which grows by the L
    target slots; each step runs the backbone on the one fed token, which writes its keys/values into its slot."""

    def __init__(self, model: XLNet, layout: DecodeLayout, L: int):
        self.model = model
        enc = encode_context(model, layout)
        R, dev = layout.batch, layout.ctx.device
        t_pos = target_positions(layout, L)[0]  # [R, L]
        self.base = enc.cache.pos.shape[1]  # M + C: the first target slot
        self.kv = enc.cache.extend(t_pos, torch.ones_like(t_pos))  # target keys: segment 1
        self.ok = torch.cat([enc.ok, enc.ok.new_zeros(R, L)], dim=1)  # [R, J]; targets join as fed
        self.next_pos = t_pos[:, 0]  # [R] position of the next fed token
        sep = enc.h[torch.arange(R, device=dev), layout.ctx_len - 1]  # [R, d] the <sep> row of each example
        self.first = log_probs(model, sep)
        self.n = 0  # target tokens fed so far (the same for every row: finished rows are fed padding)

    def reorder(self, rows: Tensor) -> None:
        self.kv, self.ok, self.next_pos = self.kv.index(rows), self.ok[rows], self.next_pos[rows]

    def step(self, tok: Tensor) -> Tensor:
        """Feed tok [R] as the next target token -> log-probs [R, V] of the token after it."""
        slot = self.base + self.n
        self.ok = self.ok.clone()
        self.ok[:, slot] = True
        rows = Rows(tok[:, None], self.next_pos[:, None], torch.ones_like(tok)[:, None], self.ok[:, None, :])
        slots = torch.full_like(tok, slot)[:, None]  # [R, 1]
        h = self.model.run(rows, cache=self.kv, slots=slots, bi_data=False).h  # [R, 1, d]
        self.n += 1
        self.next_pos = self.next_pos + 1
        return log_probs(self.model, h[:, 0])


class Recompute:
    """Reference backend: every step re-runs ``model(...)`` on ``context + every fed token`` with the training masks
    (``prefix_lm_masks``) and reads the last fed row; memory per row through ``model(..., mems=...)``."""

    def __init__(self, model: XLNet, layout: DecodeLayout, L: int):
        self.model, self.layout = model, layout
        self.tokens = layout.ctx.new_zeros(layout.batch, 0)
        self.first = self._forward()

    def reorder(self, rows: Tensor) -> None:
        self.layout, self.tokens = self.layout.index(rows), self.tokens[rows]

    def step(self, tok: Tensor) -> Tensor:
        self.tokens = torch.cat([self.tokens, tok[:, None]], dim=1)
        return self._forward()

    def _forward(self) -> Tensor:
        from ..objectives.prefix_lm import prefix_lm_masks

        lay, (R, n), model = self.layout, self.tokens.shape, self.model
        C, dev = lay.ctx.shape[1], lay.ctx.device
        T = C + n
        ids = torch.full((R, T), lay.pad_id, dtype=torch.long, device=dev)
        ids[:, :C] = lay.ctx
        ids.scatter_(1, lay.ctx_len[:, None] + torch.arange(n, device=dev)[None], self.tokens)
        col = torch.arange(T, device=dev)[None]
        valid = col < (lay.ctx_len + n)[:, None]
        target = (col >= lay.ctx_len[:, None]) & valid
        cmask = prefix_lm_masks(ids, target, valid, eos_id=0).content
        seg = target.long()
        pos = recompute_positions(lay, col, target)
        if lay.mems is None:
            h = model(ids, seg, cmask, bi_data=False, positions=pos).h
        else:  # memory differs per row and is always visible in model(...): one row at a time
            h = torch.cat([model(ids[b: b + 1], seg[b: b + 1], cmask[b: b + 1],
                                 mems=[m[b: b + 1, : int(lay.mem_len[b])] for m in lay.mems]
                                 if int(lay.mem_len[b]) else None, bi_data=False,
                                 positions=None if pos is None else pos[b: b + 1]).h for b in range(R)])
        last = lay.ctx_len + n - 1  # <sep> before any token is fed
        return log_probs(model, h[torch.arange(R, device=dev), last])


BACKENDS = {"cache": Cache, "recompute": Recompute}
StepHook = Callable[[Tensor, int], None]  # (logp [R, V] of the model, step index n)


@dataclass
class Limits:
    """Per row: ``</s>`` is banned while fewer than ``min_len`` tokens are out, forced once ``max_len`` are."""

    min_len: Tensor  # [R] long, >= 1
    max_len: Tensor  # [R] long, >= min_len

    def index(self, rows: Tensor) -> "Limits":
        return Limits(self.min_len[rows], self.max_len[rows])

    def apply(self, logp: Tensor, n: int, eos: int, bans: Bans, prev: Tensor | None) -> Tensor:
        """logp [R, V] of output position n, prev [R] the tokens at n − 1 (None at n = 0) -> the constrained
        log-probs: ``bans.always`` never; ``bans.last`` (blank pieces) never right before ``</s>`` — so ``</s>`` is
        banned right after one, and a blank piece where ``</s>`` will be forced next."""
        out = bans.apply(logp).clone()
        eos_ok = n >= self.min_len
        if bans.last:
            ids = torch.tensor(bans.last, device=logp.device)
            if prev is not None:
                eos_ok = eos_ok & ~torch.isin(prev, ids)
            out[:, ids] = out[:, ids].masked_fill((n + 1 >= self.max_len)[:, None], float("-inf"))
        out[:, eos] = torch.where(eos_ok, logp[:, eos], float("-inf"))
        forced = (n >= self.max_len)[:, None]
        only_eos = torch.full_like(logp, float("-inf"))
        only_eos[:, eos] = logp[:, eos]
        return torch.where(forced, only_eos, out)


def default_limits(src: Sequence[Sequence[int]], cap: int, fixed: Sequence[int] | None = None) -> Limits:
    """Stop at ``</s>`` within [1, min(LEN_RATIO·|src| + LEN_EXTRA, cap)] tokens; ``fixed`` lengths force exactly N."""
    if fixed is not None:
        n = torch.tensor(list(fixed))
        return Limits(n, n)
    hi = torch.tensor([min(LEN_RATIO * len(s) + LEN_EXTRA, cap) for s in src]).clamp_min(1)
    return Limits(torch.ones_like(hi), hi)


def decode(model: XLNet, src: Sequence[Sequence[int]], cfg: DecodeConfig, limits: Limits, *, sep_id: int,
           pad_id: int, eos_id: int, banned: Sequence[int] = (), banned_last: Sequence[int] = (),
           on_step: StepHook | None = None, examples: Sequence[int] | None = None,
           aligned: bool = False) -> list[Hypothesis]:
    """Decode each source left to right until ``</s>``: greedy, ``cfg.sample`` or ``cfg.beam`` > 1 (the best beam by
    length-normalised log-probability, ``</s>`` included). ``banned`` never generated (``</s>`` is allowed);
    ``banned_last`` never the last token (``Tokenizer.blank_ids``: no ``</s>`` right after one).
    examples: each source's index in the whole input (default 0..B-1); sampling draws from the stream of
    (``cfg.seed``, that index), as ``search.decode`` does, so a sample does not depend on batching. aligned: the
    checkpoint was trained with ``seq2seq.aligned_positions`` (target token j at position j)."""
    if not len(src) or any(len(s) == 0 for s in src):
        raise UserError("nothing to decode: empty batch or empty source")
    examples = list(range(len(src))) if examples is None else list(examples)
    if len(examples) != len(src):
        raise UserError(f"got {len(src)} sources but {len(examples)} example indices")
    bans = Bans(tuple(b for b in banned if b != eos_id), tuple(banned_last))
    dev = model_device(model)
    limits = Limits(limits.min_len.to(dev), limits.max_len.to(dev))
    with inference(cfg.bf16, dev):
        layout = build_layout(model, [list(s) for s in src], [1] * len(src), sep_id, pad_id, cfg.max_segment,
                              aligned=aligned)
        if cfg.beam > 1:
            rows = torch.arange(len(src), device=dev).repeat_interleave(cfg.beam)
            layout, limits = layout.index(rows), limits.index(rows)
        backend = BACKENDS[cfg.backend](model, layout, int(limits.max_len.max()) + 1)
        if cfg.beam > 1:
            return _beam(backend, limits, cfg, bans, eos_id, pad_id, on_step)
        return _single(backend, limits, cfg, bans, eos_id, pad_id, on_step, examples)


def _single(backend, limits: Limits, cfg: DecodeConfig, bans: Bans, eos: int, pad: int, on_step,
            examples: list[int]) -> list[Hypothesis]:
    """Greedy or seeded sampling, all rows in lockstep; a finished row is fed padding and ignored."""
    logp, R = backend.first, backend.first.shape[0]
    gens = [example_generator(cfg.seed + 1, ex) for ex in examples] if cfg.sample else []  # as search._single
    done = torch.zeros(R, dtype=torch.bool, device=logp.device)
    toks, lps = [], []
    for n in range(int(limits.max_len.max()) + 1):
        if on_step is not None:
            on_step(logp, n)
        prev = toks[-1] if toks else None
        tok = pick_tokens(limits.apply(logp, n, eos, bans, prev)[:, None], cfg, gens, ~done[:, None])[:, 0]
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        toks.append(tok)
        lps.append(logp.gather(1, tok[:, None])[:, 0])
        done = done | (tok == eos)
        if bool(done.all()):
            break
        logp = backend.step(tok)
    return _hypotheses(torch.stack(toks, 1), torch.stack(lps, 1), eos, range(R))


def _beam(backend, limits: Limits, cfg: DecodeConfig, bans: Bans, eos: int, pad: int, on_step) -> list[Hypothesis]:
    """Beam search over tokens; a finished hypothesis stays in the beam with its logprob (one continuation: padding,
    log-prob 0) until every hypothesis of every example has emitted ``</s>``."""
    logp, W = backend.first, cfg.beam
    R = logp.shape[0]
    B, V, dev = R // W, logp.shape[1], logp.device
    logprob = torch.full((R,), float("-inf"), device=dev)
    logprob[::W] = 0.0  # one live hypothesis per example at the start
    done = torch.zeros(R, dtype=torch.bool, device=dev)
    finished = torch.full((R, V), float("-inf"), device=dev)
    finished[:, pad] = 0.0
    toks, lps = logp.new_zeros(R, 0, dtype=torch.long), logp.new_zeros(R, 0)
    out_len = torch.zeros(R, dtype=torch.long, device=dev)  # tokens emitted, </s> included
    for n in range(int(limits.max_len.max()) + 1):
        if on_step is not None:
            on_step(logp, n)
        prev = toks[:, -1] if n else None
        cand = torch.where(done[:, None], finished, limits.apply(logp, n, eos, bans, prev))  # [R, V]
        top_logprob, top = (logprob[:, None] + cand).view(B, W * V).topk(W, dim=1)  # [B, W]
        src = (torch.arange(B, device=dev)[:, None] * W + top // V).view(-1)  # [R] source row of each new beam
        tok = (top % V).view(-1)
        lp = torch.where(done[src], torch.zeros_like(logprob), logp[src, tok])
        out_len = out_len[src] + (~done[src]).long()
        logprob, done = top_logprob.view(-1), done[src] | (tok == eos)
        toks, lps = torch.cat([toks[src], tok[:, None]], 1), torch.cat([lps[src], lp[:, None]], 1)
        limits = limits.index(src)
        backend.reorder(src)
        if bool(done.all()):
            break
        logp = backend.step(tok)
    best = (logprob / out_len.to(logprob.dtype)).view(B, W).argmax(1) + torch.arange(B, device=dev) * W
    return _hypotheses(toks, lps, eos, best.tolist())


def _hypotheses(toks: Tensor, lps: Tensor, eos: int, rows) -> list[Hypothesis]:
    """Rows of output tokens [R, N] (``</s>`` then padding, or cut at the cap) -> hypotheses without ``</s>``."""
    out = []
    for r in rows:
        t, lp = toks[r].tolist(), lps[r].tolist()
        n = t.index(eos) if eos in t else len(t)
        end = min(n + 1, len(t))  # the logprob counts </s> when it was emitted
        out.append(Hypothesis(tokens=t[:n], logprob=float(sum(lp[:end])), token_logprobs=lp[:n],
                              trace=[[i] for i in range(n)], steps=end))
    return out


# --- the generate command's entry --------------------------------------------------------------------------------

def check_flags(dcfg: DecodeConfig, length_beam: int) -> None:
    """A prefix-lm checkpoint decodes left to right, one token per step, and stops at ``</s>``."""
    if dcfg.order != "l2r" or dcfg.k_per_step != 1 or dcfg.threshold is not None:
        spec = dcfg.order + (f"@{dcfg.k_per_step}" if dcfg.k_per_step != 1 else "") + \
            (f"@{dcfg.threshold}" if dcfg.threshold is not None else "")
        raise UserError(f"--order {spec}: a prefix-lm checkpoint decodes left to right only (--order l2r)")
    if dcfg.refine_iters:
        raise UserError("--refine_iters: a prefix-lm checkpoint has no query stream to refine with")
    if length_beam != 1:
        raise UserError("--length_beam: a prefix-lm checkpoint has no length head (it stops at </s>)")


def translate(tr, sources: list[list[int]], dcfg: DecodeConfig, mode, length_beam: int = 1,
              refs: list[list[int]] | None = None, batch_size: int = 32, progress=None,
              desc: str = "") -> list[Hypothesis]:
    """``generate``'s batches for a prefix-lm Translator: length-sorted, hypotheses in input order. Length mode
    ``predict`` (the default) = stop at ``</s>``; ``oracle`` / ``N`` force that many tokens."""
    check_flags(dcfg, length_beam)
    tok = tr.tokenizer
    cap = tr.config.objective.seq2seq.max_len
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: list = [None] * len(sources)
    task = progress.add_task(desc or "l2r", total=len(sources)) if progress is not None else None
    for lo in range(0, len(order), batch_size):
        idx = order[lo: lo + batch_size]
        srcs = [sources[i] for i in idx]
        fixed = None if mode.kind == "predict" else \
            [mode.n if mode.kind == "fixed" else max(1, len(refs[i])) for i in idx]
        hyps = decode(tr.model, srcs, dcfg, default_limits(srcs, cap, fixed), sep_id=tok.sep_id, pad_id=tok.pad_id,
                      eos_id=tok.eos_id, banned=tr.banned, banned_last=tok.blank_ids,
                      examples=idx, aligned=tr.aligned)
        for i, h in zip(idx, hyps):
            results[i] = h
        if task is not None:
            progress.advance(task, len(idx))
    return results
