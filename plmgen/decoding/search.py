"""Search over any-order query-stream decoding: greedy, beam over (position, token) pairs, sampling, scoring.

Legend: B examples, W beams (beam width), R = B·W rows, L target slots, Q queried rows, F filled rows per step,
V vocab.

One loop drives every mode. A step fills the positions chosen at the previous step and queries the next ones in a
single pass of the backend (``cache.IncrementalCache`` or ``cache.NaiveRecompute``), then the order strategy
(``orders``) and the search mode choose what to fill next. Scores are model log-probabilities (temperature 1,
before banning) of the chosen tokens; for one position per step they add up to the exact chain-rule
log-probability of the output under the order that was followed (``sequence_logprob`` recomputes it for a given
target).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..config import DecodeConfig
from ..errors import UserError
from ..model import XLNet
from .cache import BACKENDS, DecodeLayout, EncodedContext, build_layout, model_device
from .orders import Order, example_generator, get_order
from .refine import refine
from .speculative import speculative
from .state import Bans, Hypothesis, RowState, sampling_probs
from .tree import tree_speculative


StepHook = Callable[[Tensor, Tensor, Tensor], None]  # (logp [R, Q, V], q_pos [R, Q], q_ok [R, Q])


def decode(model: XLNet, src: Sequence[Sequence[int]], tgt_lengths: Sequence[int], cfg: DecodeConfig, *, sep_id: int,
           pad_id: int, banned: Sequence[int] = (), banned_last: Sequence[int] = (),
           force: Sequence[Sequence[int]] | None = None, on_step: StepHook | None = None,
           examples: Sequence[int] | None = None, end_id: int | None = None,
           empty_id: int | None = None, aligned: bool = False) -> list[Hypothesis]:
    """Decode one target of length ``tgt_lengths[b]`` for each source ``src[b]`` (token ids without <sep>).

    banned: ids never generated (e.g. the tokenizer's special ids); banned_last: ids never in a target's last slot
    (``Tokenizer.blank_ids``, see ``state.Bans``). force: teacher-force these targets (the chosen
    positions are filled with the given tokens; used by ``sequence_logprob``). on_step: called with each step's
    log-probs. examples: each source's index in the whole input (default 0..B-1): random orders and sampling draw from the
    stream of (``cfg.seed``, that index), so an output does not depend on which sentences share its batch.
    end_id: the end marker of a model fine-tuned with ``end_marker`` (None: none); aligned: a model fine-tuned with
    ``aligned_positions``. empty_id: the empty token of a model fine-tuned with ``empty_slots`` (None: none; adaptive
    orders decide its slots last unless ``cfg.empty_last`` is False, see ``decoding.orders``). Returns one
    ``Hypothesis`` per example (the best beam). Runs under :func:`inference`; the model should be in eval mode.
    """
    _validate(model, src, tgt_lengths, cfg, force)
    examples = list(range(len(src))) if examples is None else list(examples)
    if len(examples) != len(src):
        raise UserError(f"got {len(src)} sources but {len(examples)} example indices")
    with inference(cfg.bf16, model_device(model)):
        layout = build_layout(model, [list(s) for s in src], list(tgt_lengths), sep_id, pad_id, cfg.max_segment, end_id,
                              aligned)
        return decode_layout(model, layout, cfg, banned=banned, banned_last=banned_last, force=force, on_step=on_step,
                             examples=examples, empty_id=empty_id)


def decode_layout(model: XLNet, layout: DecodeLayout, cfg: DecodeConfig, *, banned: Sequence[int] = (),
                  banned_last: Sequence[int] = (), force: Sequence[Sequence[int]] | None = None,
                  on_step: StepHook | None = None, examples: Sequence[int] | None = None,
                  encoded: EncodedContext | None = None, empty_id: int | None = None) -> list[Hypothesis]:
    """``decode`` on sources already laid out (``cache.build_layout``) and, optionally, already encoded
    (``cache.encode_context``: the translate API encodes each source once for the length head and the decoder).
    examples, empty_id: as in ``decode`` (default 0..B-1). Call it inside :func:`inference`."""
    examples = list(range(layout.batch)) if examples is None else list(examples)
    order = get_order(cfg.order, k=cfg.k_per_step, threshold=cfg.threshold, seed=cfg.seed, window=cfg.window,
                      empty_id=empty_id if cfg.empty_last else None, ahead=cfg.ahead_penalty)
    forced = None
    if force is not None:
        forced = torch.full((layout.batch, int(layout.tgt_len.max())), layout.pad_id, dtype=torch.long)
        for b, t in enumerate(force):
            forced[b, : len(t)] = torch.tensor(list(t), dtype=torch.long)
        forced = forced.to(layout.ctx.device)
    spec = tree_speculative if cfg.draft == "tree" else speculative
    run = _beam if cfg.beam > 1 else spec if cfg.speculate else _single
    bans = Bans(tuple(banned), tuple(banned_last))
    hyps = run(model, layout, order, cfg, bans, forced, on_step, examples, encoded)
    if cfg.refine_iters:
        hyps = refine(model, layout, hyps, cfg.refine_iters, bans)
    return hyps


@contextmanager
def inference(bf16: bool, device: torch.device | str):
    """Gradient-free context for decoding on ``device``: ``inference_mode`` in fp32; ``no_grad`` + bf16 autocast
    of the device's type in bf16, because autocast's cache of bf16 weight copies is off under ``inference_mode``
    (every matmul would re-cast its weight, the 8k-word LM head included, at every step)."""
    if not bf16:
        with torch.inference_mode():
            yield
        return
    with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        yield


def sequence_logprob(model: XLNet, src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]],
                     order: str = "l2r", *, sep_id: int, pad_id: int, seed: int = 0, max_segment: int = 512,
                     bf16: bool = False, backend: str = "cache", end_id: int | None = None,
                     aligned: bool = False) -> list[Hypothesis]:
    """Exact chain-rule log-probability of each given target under ``order`` (one position per step; for an
    adaptive order the positions are chosen from the model's predictions, the tokens are the given ones).
    Returns ``Hypothesis`` objects (``logprob``, ``avg_logprob``, ``trace``) with ``tokens`` = the given target."""
    cfg = DecodeConfig(order=order, seed=seed, max_len=max([len(t) for t in tgt] + [1]), max_segment=max_segment,
                       bf16=bf16, backend=backend)
    return decode(model, src, [len(t) for t in tgt], cfg, sep_id=sep_id, pad_id=pad_id, force=tgt, end_id=end_id,
                  aligned=aligned)


def _validate(model, src, tgt_lengths, cfg, force) -> None:
    if len(src) != len(tgt_lengths):
        raise UserError(f"got {len(src)} sources but {len(tgt_lengths)} target lengths")
    if not len(src):
        raise UserError("nothing to decode: the batch of sources is empty")
    for b, (s, n) in enumerate(zip(src, tgt_lengths)):
        if len(s) == 0:
            raise UserError(f"source {b} is empty")
        if not isinstance(n, int) or not 1 <= n <= cfg.max_len:
            raise UserError(f"target length of example {b} must be an int in [1, --max_len {cfg.max_len}], got {n!r}")
    if force is not None and [len(t) for t in force] != list(tgt_lengths):
        raise UserError("forced targets must have the given target lengths")
    V = model.cfg.vocab_size
    if any(not 0 <= t < V for s in src for t in s):
        raise UserError(f"source token ids must be in [0, {V})")


def pick_tokens(lp: Tensor, cfg: DecodeConfig, gens: list[torch.Generator], ok: Tensor) -> Tensor:
    """lp [R, F, V] (banned already −inf) -> tokens [R, F]: argmax, or a sample. Row r draws one uniform number per
    filled slot (``ok`` [R, F]) from its own stream ``gens[r]``, so its tokens depend on nothing but its own row."""
    if not cfg.sample or cfg.temperature == 0:
        return lp.argmax(-1)
    cdf = sampling_probs(lp, cfg).cumsum(-1)  # [R, F, V]
    u = torch.zeros(lp.shape[:-1])
    for r, row_ok in enumerate(ok.cpu()):
        if n := int(row_ok.sum()):
            u[r, row_ok] = torch.rand(n, generator=gens[r])
    u = u.to(cdf.device)[..., None] * cdf[..., -1:]  # inverse CDF; never past the last token with mass
    return (cdf <= u).sum(-1).clamp(max=lp.shape[-1] - 1)


def _query(order: Order, st: "RowState", plan, backend, fill, on_step, bans: Bans, last_slot: Tensor,
           inplace: bool = False):
    """One backend pass: fill last step's choices, query the order's next positions; None when all are filled.
    inplace: ban in the returned log-probs themselves (the caller reads them only at tokens chosen after banning)."""
    q_pos, q_ok = order.queries(st.open, st.n_filled, plan)
    if not q_ok.any():
        return None
    logp = backend.step(*fill, q_pos, q_ok)  # [R, Q, V]
    st.passes += q_ok.any(1)
    if on_step is not None:
        on_step(logp, q_pos, q_ok)
    return q_pos, q_ok, logp, bans.apply(logp, q_pos, last_slot, inplace=inplace)


def _single(model, layout: DecodeLayout, order: Order, cfg: DecodeConfig, bans: Bans, forced, on_step, examples,
            encoded=None):
    """Greedy / sampling / forced scoring: each row follows its own order; k or a threshold give parallel fills."""
    backend = BACKENDS[cfg.backend](model, layout, encoded)
    st = RowState.new(layout.tgt_len, layout.pad_id)
    plan = order.init(layout.tgt_len.tolist(), st.tokens.shape[1], st.tokens.device, examples)
    # Sampling's streams are seeded apart from the random order's (an order and its tokens must not correlate).
    gens = [example_generator(cfg.seed + 1, ex) for ex in examples] if cfg.sample else []
    R = layout.batch
    fill = (st.tokens.new_zeros(R, 0),) * 2 + (st.open.new_zeros(R, 0),)
    # Chosen tokens are never banned ones, so unless a hook keeps the log-probs or the tokens are forced (and may
    # be banned ones), banning needs no copy of the [R, Q, V] log-probs.
    inplace = forced is None and on_step is None
    while (nxt := _query(order, st, plan, backend, fill, on_step, bans, layout.tgt_len - 1, inplace)) is not None:
        q_pos, q_ok, logp, blp = nxt  # [R, Q], [R, Q], [R, Q, V] model / banned log-probs
        sel, ok = order.choose(blp, q_ok)  # [R, F]
        pos = q_pos.gather(1, sel)
        rows = torch.arange(R, device=sel.device)[:, None]  # row indexing copies whole vocab rows: cheaper than
        chosen = blp if blp.shape[1] == 1 else blp[rows, sel]  # a gather; one queried slot (Q = 1): sel is 0
        tok = forced.gather(1, pos) if forced is not None else pick_tokens(chosen, cfg, gens, ok)
        tok_lp = logp[rows, sel, tok]  # [R, F] model log-prob of the chosen tokens
        st.fill(pos, tok, tok_lp, ok)
        fill = (pos * ok, tok * ok, ok)
    return st.hypotheses(layout.tgt_len.tolist())


def _beam(model, layout: DecodeLayout, order: Order, cfg: DecodeConfig, bans: Bans, forced, on_step, examples,
          encoded=None):
    """Beam search over (position, token) pairs, one position per step, ranked by the chain-rule score.

    Fixed orders: the position is given, tokens are expanded. Adaptive orders: each hypothesis proposes its top-W
    positions by the order's own priority and every (position, token) pair among them competes — so W = 1 is exactly
    the greedy decode for every order. Hypotheses of an example all have the same length, so they finish together.
    """
    B, W = layout.batch, cfg.beam
    rows = torch.arange(B, device=layout.ctx.device).repeat_interleave(W)
    plan = order.init(layout.tgt_len.tolist(), int(layout.tgt_len.max()), rows.device, examples)  # per example
    plan = None if plan is None else plan[rows]
    layout = layout.index(rows)
    backend = BACKENDS[cfg.backend](model, layout, None if encoded is None else encoded.index(rows))
    st = RowState.new(layout.tgt_len, layout.pad_id)
    st.logprob[:] = float("-inf")
    st.logprob[::W] = 0.0  # one live hypothesis per example at the start
    own = torch.arange(B * W, device=rows.device)
    fill = (st.tokens.new_zeros(B * W, 0),) * 2 + (st.open.new_zeros(B * W, 0),)
    while (nxt := _query(order, st, plan, backend, fill, on_step, bans, layout.tgt_len - 1)) is not None:
        q_pos, q_ok, logp, blp = nxt  # [R, Q], [R, Q], [R, Q, V] model / banned log-probs
        sel, ok = order.rank_positions(blp, q_ok, W)  # candidate positions per hypothesis [R, S]
        S, V = sel.shape[1], blp.shape[-1]
        cand = blp.gather(1, sel[:, :, None].expand(-1, -1, V)).masked_fill(~ok[:, :, None], float("-inf"))
        total = (st.logprob[:, None, None] + cand).view(B, W * S * V)  # [B, W·S·V]
        top = total.topk(W, dim=1).indices  # [B, W]
        src_row = (torch.arange(B, device=top.device)[:, None] * W + top // (S * V)).view(-1)
        s_idx, tok = (top // V % S).view(-1), (top % V).view(-1)
        live = ok.view(B, W, S).any(-1).any(-1).repeat_interleave(W)  # example still has open positions
        src_row = torch.where(live, src_row, own)
        backend.reorder(src_row)
        st.reorder(src_row)
        q_idx = sel[src_row].gather(1, s_idx[:, None])[:, 0]  # [R] queried row of the chosen candidate
        pos = q_pos[src_row, q_idx][:, None]
        tok_lp = logp[src_row, q_idx, tok][:, None]
        fill_ok = live[:, None]
        st.fill(pos * fill_ok, tok[:, None] * fill_ok, tok_lp, fill_ok)
        fill = (pos * fill_ok, tok[:, None] * fill_ok, fill_ok)
    best = st.logprob.view(B, W).argmax(1) + torch.arange(B, device=rows.device) * W
    return st.hypotheses(layout.tgt_len[best].tolist(), best.tolist())
