"""SentencePiece tokenizer with XLNet's special symbols.

Ids of the specials match XLNet's released ``spiece.model`` so checkpoints and our own models agree:

    <unk>=0 <s>=1 </s>=2 <cls>=3 <sep>=4 <pad>=5 <mask>=6 <eod>=7 <eop>=8

All but ``<unk>`` are sentencepiece *control* symbols: they have ids but no surface form, so ``encode`` never
produces them from raw text. A literal "<mask>" typed by a user is ordinary text and is split into pieces like
"<", "mask", ">" (check ``encode("<mask>")``); the model only ever sees mask id 6 where plmgen puts it.
``load`` accepts any model (XLNet's own included) and looks the ids up by piece name.
"""

from __future__ import annotations

import functools

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm

from plmgen.files import fsync_file
from plmgen.errors import UserError

SPECIALS = ("<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>")
CONTROL = SPECIALS[3:]  # sentencepiece places these right after unk/bos/eos, in order: ids 3..8


def _write_corpus(texts: Iterable[str], path: Path) -> str:
    """One whitespace-normalised line per non-blank text (sentencepiece's input format) -> the file's path."""
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            if t.strip():
                f.write(" ".join(t.split()) + "\n")
    return str(path)


class Tokenizer:
    """A loaded sentencepiece model plus the ids of XLNet's special symbols."""

    def __init__(self, processor: spm.SentencePieceProcessor, path: str | None = None) -> None:
        self.sp = processor
        self.path = path
        ids = {}
        for piece in SPECIALS:
            i = processor.piece_to_id(piece)
            # piece_to_id answers unk's id for unknown pieces, so confirm the round trip.
            if processor.id_to_piece(i) != piece:
                where = path or "tokenizer model"
                raise UserError(f"{where}: has no {piece} piece; XLNet needs all of {' '.join(SPECIALS)}")
            ids[piece] = i
        self.unk_id, self.bos_id, self.eos_id = ids["<unk>"], ids["<s>"], ids["</s>"]
        self.cls_id, self.sep_id, self.pad_id = ids["<cls>"], ids["<sep>"], ids["<pad>"]
        self.mask_id, self.eod_id, self.eop_id = ids["<mask>"], ids["<eod>"], ids["<eop>"]
        # An empty target slot (``Seq2SeqConfig.empty_slots``): <eop>, which no seq2seq text contains otherwise.
        self.empty_id = self.eop_id
        # decode() drops these; <unk> stays (rendered " ⁇ ") because it stands for real text that was lost.
        self.special_ids = frozenset(ids[p] for p in SPECIALS[1:])

    # --- construction -------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load an existing ``.model`` file unchanged."""
        path = str(path)
        if not Path(path).is_file():
            raise UserError(f"{path}: tokenizer model not found")
        sp = spm.SentencePieceProcessor()
        try:
            sp.load(path)
        except (OSError, RuntimeError) as e:
            reason = str(e).splitlines()[0] if str(e) else "load failed"
            raise UserError(f"{path}: not a sentencepiece model ({reason})")
        return cls(sp, path)

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | None = None,
        out_prefix: str | os.PathLike = "spiece",
        files: Sequence[str | os.PathLike] = (),
        vocab_size: int = 8000,
        model_type: str = "unigram",
        character_coverage: float = 0.9995,
        byte_fallback: bool | None = None,
        input_sentence_size: int = 2_000_000,
        seed: int = 0,
    ) -> "Tokenizer":
        """Train a joint model on ``texts`` and/or ``files``; writes ``<out_prefix>.model`` and ``.vocab``.

        ``hard_vocab_limit=False`` lets tiny corpora (tests, toy data) end up with fewer pieces than asked instead of
        failing. Both files are trained under a temp prefix and renamed into place, so a crash never leaves a model
        without its vocab or a half-written model.
        """
        out_prefix = Path(out_prefix)
        out_prefix.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(dir=out_prefix.parent, prefix=f".{out_prefix.name}.tmp-"))
        try:
            inputs = [str(f) for f in files]
            if texts is not None:
                inputs.append(_write_corpus(texts, tmp_dir / "corpus.txt"))
            if not inputs:
                raise UserError("tokenizer training needs texts or files")
            spm.set_random_generator_seed(seed)  # sentence sampling/shuffling is random; fix it for reruns
            spm.SentencePieceTrainer.train(
                input=inputs,
                model_prefix=str(tmp_dir / "spiece"),
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                # Rare characters become UTF-8 byte pieces instead of <unk> (decoded " ⁇ "). Default: on when the
                # vocabulary has room for the 256 byte pieces (vocab_size >= 1024), off for toy vocabularies.
                byte_fallback=vocab_size >= 1024 if byte_fallback is None else byte_fallback,
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=True,
                hard_vocab_limit=False,
                unk_id=0,
                bos_id=1,
                eos_id=2,
                pad_id=-1,  # <pad> is a control symbol at 5, as in XLNet, not sentencepiece's own pad slot
                control_symbols=list(CONTROL),
                seed_sentencepiece_size=1_000_000,
                num_threads=os.cpu_count() or 1,
                minloglevel=2,
            )
            for ext in ("model", "vocab"):
                fsync_file(tmp_dir / f"spiece.{ext}")
                os.replace(tmp_dir / f"spiece.{ext}", f"{out_prefix}.{ext}")
        finally:
            for p in tmp_dir.iterdir():
                p.unlink()
            tmp_dir.rmdir()
        return cls.load(f"{out_prefix}.model")

    # --- use ----------------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts), out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        """Detokenized text, dropping special ids (``<unk>`` is kept, as `` ⁇ ``)."""
        return self.sp.decode([int(i) for i in ids if int(i) not in self.special_ids])

    @functools.cached_property
    def blank_ids(self) -> tuple[int, ...]:
        """Pieces that detokenize to whitespace only (the bare ``▁``, space bytes). Sentencepiece strips trailing
        whitespace, so no encoded text ends in one: decoders never put one in a target's last slot (an output of
        just ``▁`` would be an empty translation)."""
        return tuple(i for i in range(self.vocab_size)
                     if i not in self.special_ids and i != self.unk_id and not self.sp.decode([i]).strip())

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))
