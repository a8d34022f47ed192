"""The translate API: a loaded checkpoint + token ids + a ``TranslateConfig`` -> hypotheses. No flags, no files.

Legend: B sources in a batch, N length candidates, C context slots (source tail + <sep>), d model dim.

Flow per length-sorted batch: lay the sources out and encode them once (``cache.encode_context``: per layer the
keys/values of memory + context, and the context's final content states) -> choose each target length (the length
head reads those final states; or the oracle / a fixed length; with ``length_beam`` N the top-N predicted lengths
are all decoded and the best length-normalised log-probability wins) -> ``search.decode_layout`` starting its cache
from the same encoding. Long sources go through Transformer-XL memory for both the length head and the decoder.

The command line (``generate.py``) parses flags into a ``TranslateConfig`` and calls :func:`translate`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch

from plmgen.config import TranslateConfig
from plmgen.decoding.cache import DecodeLayout, EncodedContext, build_layout, encode_context
from plmgen.decoding.search import decode_layout, inference
from plmgen.errors import UserError
from plmgen.length import LengthMode, parse_length_mode, select_best, top_lengths


@dataclass
class Translator:
    """A loaded checkpoint ready to decode: backbone, length head (if the objective has one), tokenizer, config."""

    model: torch.nn.Module
    objective: torch.nn.Module
    tokenizer: object
    config: object  # ExperimentConfig
    path: str

    @property
    def length_head(self):
        return getattr(self.objective, "length_head", None)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def end_id(self) -> int | None:
        """The end marker the checkpoint was fine-tuned with (``Seq2SeqConfig.end_marker``), else None."""
        return self.tokenizer.eos_id if self.config.objective.seq2seq.end_marker else None

    @property
    def aligned(self) -> bool:
        """The checkpoint was fine-tuned with target positions from 0 (``Seq2SeqConfig.aligned_positions``)."""
        return self.config.objective.seq2seq.aligned_positions

    @property
    def empty_id(self) -> int | None:
        """The empty token's id when the checkpoint was fine-tuned with ``Seq2SeqConfig.empty_slots``, else None."""
        return self.tokenizer.empty_id if self.config.objective.seq2seq.empty_slots else None

    @property
    def banned(self) -> list[int]:
        """Ids the decoder never writes: the tokenizer's specials, except the empty token of a checkpoint fine-tuned
        with ``Seq2SeqConfig.empty_slots`` (a slot it leaves empty; ``Tokenizer.decode`` drops it from the text)."""
        return sorted(self.tokenizer.special_ids - {self.empty_id})


@dataclass
class DecodeRun:
    """One decoding run (an order × a length mode) over all inputs."""

    order: str
    length: str
    hyps: list[str]
    hypotheses: list  # plmgen.decoding.Hypothesis per input
    seconds: float

    @property
    def tokens(self) -> int:
        return sum(len(h.tokens) for h in self.hypotheses)

    @property
    def steps(self) -> float:
        return sum(h.steps for h in self.hypotheses) / max(1, len(self.hypotheses))


def resolve_device(device: str | None = None) -> torch.device:
    """``None``/``auto``: CUDA when available, else the CPU; otherwise the named device (UserError if unusable)."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device: {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    return dev


def load_translator(checkpoint: str, device: str | torch.device | None = None) -> Translator:
    """The checkpoint's model + objective + tokenizer on ``device`` (default: CUDA when available), checked against
    each other (UserError on a mismatch)."""
    from plmgen.tokenizer import Tokenizer
    from plmgen.train import load_checkpoint

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    ck = load_checkpoint(checkpoint, device=dev)
    if ck.tokenizer_path is None:
        raise UserError(f"--checkpoint {checkpoint}: its tokenizer.model is missing (expected in the run folder)")
    tok = Tokenizer.load(ck.tokenizer_path)
    V = ck.config.model.vocab_size
    if tok.vocab_size != V:
        raise UserError(f"--checkpoint {checkpoint}: tokenizer {ck.tokenizer_path} has {tok.vocab_size} pieces but the "
                        f"model's vocabulary has {V}; they come from different runs")
    return Translator(ck.model.eval(), ck.objective.eval(), tok, ck.config, str(checkpoint))


# --- lengths -------------------------------------------------------------------------------------------------------

def _length_head_logits(tr: Translator, layout: DecodeLayout, enc: EncodedContext) -> torch.Tensor:
    """Length-head logits [B, L] from the encoded context's final content states (source tokens, not <sep>)."""
    head = tr.length_head
    if head is None:
        raise UserError(f"--checkpoint {tr.path}: trained with objective {tr.config.objective.name!r}, which has no "
                        "length head; fine-tune it with objective seq2seq, or use --length oracle or --length N")
    col = torch.arange(layout.ctx.shape[1], device=layout.ctx.device)[None]
    src = (col < layout.ctx_len[:, None]) & (layout.ctx != tr.tokenizer.sep_id)  # [B, C]
    return head(enc.h, src).float()


def length_logits(tr: Translator, sources: Sequence[Sequence[int]], bf16: bool = False,
                  max_segment: int = 512) -> torch.Tensor:
    """Length-head logits [B, L] for ``sources`` (the states the decoder's cache starts from; see the module doc)."""
    tok = tr.tokenizer
    with inference(bf16, tr.device):
        layout = build_layout(tr.model, [list(s) for s in sources], [1] * len(sources), tok.sep_id, tok.pad_id,
                              max_segment)  # the context alone: no target positions needed
        return _length_head_logits(tr, layout, encode_context(tr.model, layout))


def candidate_lengths(mode: LengthMode, beam: int, n: int, refs: Sequence[Sequence[int]] | None,
                      logits: "callable") -> list[list[int]]:
    """Target length candidates per source: N from the length head (``logits()``, best first), else the oracle /
    fixed one."""
    if mode.kind == "fixed":
        return [[mode.n] for _ in range(n)]
    if mode.kind == "oracle":
        return [[max(1, len(r))] for r in refs]
    lengths, _ = top_lengths(logits(), beam)
    return lengths.tolist()


def best_per_source(hyps: list, candidates: list[list[int]]) -> list:
    """Hypotheses of every (source, length candidate), flattened -> per source the best length-normalised one."""
    out, i = [], 0
    for c in candidates:
        group = hyps[i : i + len(c)]
        i += len(c)
        if len(group) == 1:
            out.append(group[0])
            continue
        scores = torch.tensor([[h.logprob for h in group]], dtype=torch.float64)
        lens = torch.tensor([[len(h.tokens) for h in group]])
        out.append(group[int(select_best(scores, lens)[0])])
    return out


# --- running -------------------------------------------------------------------------------------------------------

def translate_batch(tr: Translator, sources: list[list[int]], cfg: TranslateConfig,
                    refs: list[list[int]] | None = None, examples: Sequence[int] | None = None,
                    on_step=None) -> list:
    """One batch of sources (token ids) -> one ``Hypothesis`` per source; the sources are encoded once.
    examples: each source's index in the whole input (random orders and sampling draw from its own stream).
    on_step: passed to ``search.decode_layout`` (each step's log-probs, e.g. for an analysis)."""
    examples = list(range(len(sources))) if examples is None else list(examples)
    tok, dcfg = tr.tokenizer, cfg.decode
    mode = parse_length_mode(cfg.length)
    with inference(dcfg.bf16, tr.device):
        layout = build_layout(tr.model, sources, [1] * len(sources), tok.sep_id, tok.pad_id, dcfg.max_segment,
                              tr.end_id, tr.aligned)
        enc = encode_context(tr.model, layout)
        cands = candidate_lengths(mode, cfg.length_beam, len(sources), refs,
                                  lambda: _length_head_logits(tr, layout, enc))
        cands = [[min(n, dcfg.max_len) for n in c] for c in cands]
        rows = torch.tensor([b for b, c in enumerate(cands) for _ in c], device=layout.ctx.device)
        lengths = torch.tensor([n for c in cands for n in c], device=layout.ctx.device)
        flat = layout.index(rows, tgt_len=lengths)
        hyps = decode_layout(tr.model, flat, dcfg, banned=tr.banned, banned_last=tok.blank_ids,
                             empty_id=tr.empty_id,
                             encoded=enc.index(rows), on_step=on_step,
                             examples=[examples[b] for b in rows.tolist()])
    return best_per_source(hyps, cands)


def translate(tr: Translator, sources: list[list[int]], cfg: TranslateConfig, refs: list[list[int]] | None = None,
              progress=None, label: str = "", desc: str = "") -> DecodeRun:
    """Decode all sources (token ids) in length-sorted batches of ``cfg.batch_size``; hypotheses in input order.
    ``refs`` (token ids) are needed by the oracle length mode only."""
    dcfg = cfg.decode
    mode = parse_length_mode(cfg.length)
    if mode.kind == "oracle" and refs is None:
        raise UserError("--length oracle needs references")
    if tr.config.objective.name == "prefix-lm":  # the autoregressive baseline: its own decoder (decoding/ar.py)
        from plmgen.decoding import ar

        start = time.perf_counter()
        results = ar.translate(tr, sources, dcfg, mode, cfg.length_beam, refs, cfg.batch_size, progress, desc or label)
        return DecodeRun(label or dcfg.order, mode.label, [tr.tokenizer.decode(h.tokens) for h in results], results,
                         time.perf_counter() - start)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: list = [None] * len(sources)
    task = progress.add_task(desc or label or dcfg.order, total=len(sources)) if progress is not None else None
    start = time.perf_counter()
    for lo in range(0, len(order), cfg.batch_size):
        idx = order[lo : lo + cfg.batch_size]
        hyps = translate_batch(tr, [list(sources[i]) for i in idx], cfg, None if refs is None else [refs[i] for i in idx],
                               idx)
        for i, h in zip(idx, hyps):
            results[i] = h
        if task is not None:
            progress.advance(task, len(idx))
    seconds = time.perf_counter() - start
    hyps = [tr.tokenizer.decode(h.tokens) for h in results]
    length = mode.label + (f"-beam{cfg.length_beam}" if mode.kind == "predict" and cfg.length_beam > 1 else "")
    return DecodeRun(label or dcfg.order, length, hyps, results, seconds)
