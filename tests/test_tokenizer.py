"""Tokenizer: XLNet special ids, exact round trips, specials never produced from raw text, load/save identity."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import sentencepiece as spm

from plmgen.errors import UserError
from plmgen.tokenizer import SPECIALS, Tokenizer

SUBJECTS = ["Der Benutzer", "Die Tabelle", "Das Dokument", "The user", "The table", "The document"]
VERBS = ["öffnet", "speichert", "schließt", "opens", "saves", "closes"]
OBJECTS = ["die Datei.", "den Bericht über Größe und Maße.", "the file.", "a report on size and measures."]
CORPUS = [f"{s} {v} {o}" for s, v, o in itertools.product(SUBJECTS, VERBS, OBJECTS)] * 3


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return Tokenizer.train(CORPUS, tmp_path_factory.mktemp("tok") / "spiece", vocab_size=120)


def test_special_ids_match_xlnet(tok):
    assert [tok.id_to_piece(i) for i in range(9)] == list(SPECIALS)
    ids = (tok.unk_id, tok.bos_id, tok.eos_id, tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id, tok.eod_id)
    assert ids == (0, 1, 2, 3, 4, 5, 6, 7) and tok.eop_id == 8
    assert len(tok) == tok.vocab_size > 9


@pytest.mark.parametrize("text", [
    "Das Dokument speichert den Bericht über Größe und Maße.",
    "The user closes a report on size and measures.",
    "Die Tabelle öffnet the file.",
])
def test_round_trip_exact(tok, text):
    ids = tok.encode(text)
    assert ids and tok.unk_id not in ids
    assert tok.decode(ids) == text


def test_specials_never_produced_from_raw_text(tok):
    raw = "The user <mask> opens <cls> the <pad> file. <eod> </s> <s>"
    ids = tok.encode(raw)
    assert not set(ids) & {tok.bos_id, tok.eos_id, tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id, tok.eod_id,
                           tok.eop_id}
    # Such strings are plain text: they come back (possibly via unk pieces for unseen characters like "<").
    assert "mask" in tok.decode(ids) and "opens" in tok.decode(ids)


def test_blank_ids_are_the_whitespace_only_pieces(tok):
    blank = set(tok.blank_ids)
    assert tok.sp.piece_to_id("▁") in blank  # the bare word-boundary piece this corpus needs for "<", ...
    assert all(tok.decode([i]).strip() == "" for i in blank) and not blank & tok.special_ids
    assert all(tok.decode([i]).strip() for i in range(tok.vocab_size) if i not in blank | tok.special_ids)
    for text in CORPUS[:20]:  # sentencepiece never ends an encoded text with one
        assert tok.encode(text)[-1] not in blank


def test_decode_drops_special_ids(tok):
    ids = tok.encode("The user saves the file.")
    framed = [tok.cls_id, *ids[:2], tok.mask_id, *ids[2:], tok.sep_id, tok.pad_id, tok.pad_id]
    assert tok.decode(framed) == "The user saves the file."


def test_encode_batch_matches_encode(tok):
    texts = ["Die Tabelle schließt die Datei.", "The document opens the file."]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_load_saved_model_gives_identical_ids(tok):
    again = Tokenizer.load(tok.path)
    text = "Das Dokument öffnet the file."
    assert again.encode(text) == tok.encode(text) and again.vocab_size == tok.vocab_size
    # Training renamed both files into place and removed its temp folder.
    assert sorted(p.name for p in Path(tok.path).parent.iterdir()) == ["spiece.model", "spiece.vocab"]


def _raw_spm(tmp_path, name, **kw):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / name), vocab_size=100,
                                   hard_vocab_limit=False, minloglevel=2, **kw)
    return tmp_path / f"{name}.model"


def test_load_looks_specials_up_by_name(tmp_path):
    # A foreign model with the specials at other ids (as user-defined symbols, in another order) still works.
    path = _raw_spm(tmp_path, "other", user_defined_symbols=["<mask>", "<pad>", "<eop>", "<eod>", "<sep>", "<cls>"])
    t = Tokenizer.load(path)
    assert t.id_to_piece(t.mask_id) == "<mask>" and t.mask_id != 6
    assert t.id_to_piece(t.cls_id) == "<cls>" and t.id_to_piece(t.eop_id) == "<eop>"


def test_load_rejects_model_without_xlnet_specials(tmp_path):
    path = _raw_spm(tmp_path, "plain")
    with pytest.raises(UserError, match=r"plain\.model: has no <cls>"):
        Tokenizer.load(path)
    with pytest.raises(UserError, match="not found"):
        Tokenizer.load(tmp_path / "missing.model")
