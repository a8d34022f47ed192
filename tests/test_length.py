"""Target-length head: learns a length rule from the source; length-beam choice; --length parsing."""

import pytest
import torch

from plmgen.config import ModelConfig
from plmgen.errors import UserError
from plmgen.length import LengthHead, parse_length_mode, select_best, top_lengths
from plmgen.model import XLNet


def _rule_batch(g: torch.Generator, B: int = 32):
    """Sources of 3..8 tokens all drawn from one of 5 id groups; the target length is 2·group + 1."""
    group = torch.randint(0, 5, (B,), generator=g)
    S = torch.randint(3, 9, (B,), generator=g)
    T = int(S.max())
    ids = torch.full((B, T), 5, dtype=torch.long)
    mask = torch.arange(T)[None] < S[:, None]
    toks = 20 + 10 * group[:, None] + torch.randint(0, 10, (B, T), generator=g)
    ids = torch.where(mask, toks, ids)
    return ids, mask, 2 * group + 1


def test_length_head_learns_a_length_rule():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = XLNet(ModelConfig.named("tiny", mem_len=0))
    head = LengthHead(model.cfg.d_model, max_len=16)
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=3e-3)
    first = None
    for _ in range(150):
        ids, mask, L = _rule_batch(g)
        h = model(ids, content_mask=mask[:, None, :].expand(-1, ids.shape[1], -1)).h
        loss = head.loss(head(h, mask), L)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    ids, mask, L = _rule_batch(torch.Generator().manual_seed(123), B=200)
    with torch.no_grad():
        h = model(ids, content_mask=mask[:, None, :].expand(-1, ids.shape[1], -1)).h
        pred, _ = top_lengths(head(h, mask), 1)
    acc = (pred[:, 0] == L).float().mean().item()
    assert float(loss.detach()) < first / 4
    assert acc > 0.9, acc


def test_length_head_pools_only_the_source():
    head = LengthHead(8, max_len=4)
    h = torch.randn(1, 5, 8)
    mask = torch.tensor([[True, True, False, False, False]])
    h2 = h.clone()
    h2[:, 2:] += 100.0  # changing non-source states must not change the prediction
    torch.testing.assert_close(head(h, mask), head(h2, mask))


def test_long_targets_fall_into_the_last_class():
    head = LengthHead(8, max_len=4)
    assert head.classes(torch.tensor([1, 4, 9])).tolist() == [0, 3, 3]


def test_top_lengths_are_best_first_and_one_based():
    logits = torch.tensor([[0.0, 5.0, 1.0, 3.0]])
    lengths, lp = top_lengths(logits, 3)
    assert lengths.tolist() == [[2, 4, 3]]
    assert (lp[0, :-1] >= lp[0, 1:]).all()


def test_length_beam_keeps_the_best_normalised_candidate():
    # Summed log-probs favour the short candidate; per token the long one is better and must win.
    scores = torch.tensor([[-4.0, -3.0, -9.0], [-1.0, -6.0, -2.0]])
    lengths = torch.tensor([[4, 2, 3], [1, 3, 4]])
    assert select_best(scores, lengths).tolist() == [0, 2]
    assert select_best(torch.tensor([[-4.0, -1.0]]), torch.tensor([[4, 2]])).tolist() == [1]


@pytest.mark.parametrize("value,kind,n", [("predict", "predict", 0), ("oracle", "oracle", 0), ("7", "fixed", 7), (3, "fixed", 3)])
def test_parse_length_mode(value, kind, n):
    m = parse_length_mode(value)
    assert (m.kind, m.n) == (kind, n)


@pytest.mark.parametrize("value", ["0", "-2", "long", ""])
def test_bad_length_mode_is_user_error(value):
    with pytest.raises(UserError, match="--length"):
        parse_length_mode(value)


def test_offset_head_maps_offsets_onto_absolute_lengths_per_source_length():
    head = LengthHead(d_model=4, max_len=6, offset=True)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.copy_(torch.arange(13, dtype=torch.float))  # class c = offset c − 6 scores c
    h = torch.zeros(2, 5, 4)
    src = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)  # source lengths 2 and 5
    out = head(h, src)  # [2, 6]: absolute lengths 1..6
    assert out.shape == (2, 6)
    assert out[0].tolist() == [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]  # length n has offset n − 2 -> class n + 4
    assert out[1].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]  # offset n − 5 -> class n + 1
    # a head that learned "offset 0" predicts each source's own length
    with torch.no_grad():
        head.proj.bias.copy_(-((torch.arange(13) - 6.0) ** 2))
    assert top_lengths(head(h, src), 1)[0][:, 0].tolist() == [2, 5]
    loss = head.loss(head(h, src), torch.tensor([2, 5]))
    assert float(loss.detach()) < 1.0 and torch.isfinite(loss)
