"""Parity with transformers' XLNetLMHeadModel (the independent reference) on random tiny configs."""

from __future__ import annotations

import pytest
import torch

from hf_ref import hf_twin, random_model, tiny_config
from plmgen.hf import load_hf_xlnet, save_hf_xlnet

pytest.importorskip("transformers")
TOL = 1e-5


def rand_perm_inputs(B, T, P, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 97, (B, T), generator=g)
    tt = torch.randint(0, 3, (B, T), generator=g)  # segments 0/1/2 (A, B, CLS)
    perm = (torch.rand(B, T, T, generator=g) < 0.5).float()  # HF: 1 = blocked
    tm = torch.zeros(B, P, T)
    for b in range(B):
        tm[b, torch.arange(P), torch.randperm(T, generator=g)[:P]] = 1
    return ids, tt, perm, tm


def assert_close(a, b):
    assert a.shape == b.shape
    diff = (a - b).abs().max().item()
    assert diff <= TOL, f"max abs logit diff {diff:.3g} > {TOL}"


@torch.no_grad()
def test_plain_forward():
    m = random_model(tiny_config())
    hf = hf_twin(m)
    ids = torch.randint(0, 97, (2, 13))
    assert_close(m.forward_hf(ids)[0], hf(ids).logits)


@torch.no_grad()
def test_two_stream_perm_mask_target_mapping_segments():
    m = random_model(tiny_config(), seed=1)
    hf = hf_twin(m)
    ids, tt, perm, tm = rand_perm_inputs(3, 12, 5)
    ours = m.forward_hf(ids, token_type_ids=tt, perm_mask=perm, target_mapping=tm)[0]
    ref = hf(ids, token_type_ids=tt, perm_mask=perm, target_mapping=tm).logits
    assert_close(ours, ref)
    # The comparison can fail: a different segment layout changes the logits beyond the tolerance.
    other = m.forward_hf(ids, token_type_ids=(tt + 1) % 2, perm_mask=perm, target_mapping=tm)[0]
    assert (other - ref).abs().max() > 1e-2


@torch.no_grad()
def test_two_segments_with_mems():
    m = random_model(tiny_config(mem_len=7), seed=2)
    hf = hf_twin(m)
    ids1, tt1, perm1, tm1 = rand_perm_inputs(2, 9, 3, seed=3)
    ids2, tt2, perm2, tm2 = rand_perm_inputs(2, 9, 3, seed=4)
    l1, mems = m.forward_hf(ids1, token_type_ids=tt1, perm_mask=perm1, target_mapping=tm1)
    r1 = hf(ids1, token_type_ids=tt1, perm_mask=perm1, target_mapping=tm1, use_mems=True)
    assert_close(l1, r1.logits)
    assert len(mems) == 3 and mems[0].shape == (7, 2, 32)
    for a, b in zip(mems, r1.mems):
        assert_close(a, b)
    l2, _ = m.forward_hf(ids2, token_type_ids=tt2, perm_mask=perm2, target_mapping=tm2, mems=mems)
    r2 = hf(ids2, token_type_ids=tt2, perm_mask=perm2, target_mapping=tm2, mems=r1.mems, use_mems=True)
    assert_close(l2, r2.logits)


@torch.no_grad()
def test_reuse_len_memory():
    m = random_model(tiny_config(mem_len=6), seed=5)
    hf = hf_twin(m, reuse_len=4)
    ids = torch.randint(0, 97, (2, 8))
    _, mems = m.forward_hf(ids, reuse_len=4)
    ref = hf(ids, use_mems=True).mems
    for a, b in zip(mems, ref):
        assert a.shape == (4, 2, 32)
        assert_close(a, b)


@torch.no_grad()
def test_bi_data_with_clamp_len():
    m = random_model(tiny_config(clamp_len=3, mem_len=5), seed=6)
    hf = hf_twin(m, bi_data=True)
    ids, tt, perm, tm = rand_perm_inputs(4, 10, 4, seed=7)
    _, mems = m.forward_hf(ids, bi_data=True)
    mems_hf = hf(ids, use_mems=True).mems
    ours = m.forward_hf(ids, token_type_ids=tt, perm_mask=perm, target_mapping=tm, mems=mems, bi_data=True)[0]
    ref = hf(ids, token_type_ids=tt, perm_mask=perm, target_mapping=tm, mems=mems_hf).logits
    assert_close(ours, ref)
    # The comparison can fail: the same weights read forward only differ from HF's bi_data model.
    fwd = m.forward_hf(ids, token_type_ids=tt, perm_mask=perm, target_mapping=tm, mems=mems)[0]
    assert (fwd - ref).abs().max() > 1e-2


@torch.no_grad()
def test_uni_same_length_with_mems():
    m = random_model(tiny_config(attn_type="uni", same_length=True, mem_len=4), seed=8)
    hf = hf_twin(m)
    # HF's uni path adds perm_mask in place into a [T, K, 1, 1] mask, so it only accepts batch 1 with perm_mask.
    ids1, ids2 = torch.randint(0, 97, (2, 1, 7))
    l1, mems = m.forward_hf(ids1)
    r1 = hf(ids1, use_mems=True)
    assert_close(l1, r1.logits)
    _, _, perm, tm = rand_perm_inputs(1, 7, 3, seed=9)
    l2, _ = m.forward_hf(ids2, perm_mask=perm, target_mapping=tm, mems=mems)
    r2 = hf(ids2, perm_mask=perm, target_mapping=tm, mems=r1.mems, use_mems=True)
    assert_close(l2, r2.logits)


@torch.no_grad()
def test_export_import_round_trip(tmp_path):
    from transformers import XLNetLMHeadModel

    m = random_model(tiny_config(mem_len=3, clamp_len=5), seed=10)
    save_hf_xlnet(m, tmp_path)
    hf = XLNetLMHeadModel.from_pretrained(tmp_path).eval()
    back = load_hf_xlnet(tmp_path).eval()
    assert back.cfg.mem_len == 3 and back.cfg.clamp_len == 5
    for (n1, p1), (n2, p2) in zip(m.state_dict().items(), back.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    ids, tt, perm, tm = rand_perm_inputs(2, 9, 3, seed=11)
    ours = back.forward_hf(ids, token_type_ids=tt, perm_mask=perm, target_mapping=tm)[0]
    assert_close(ours, hf(ids, token_type_ids=tt, perm_mask=perm, target_mapping=tm).logits)


@torch.no_grad()
def test_import_hf_native_checkpoint(tmp_path):
    """A checkpoint written by transformers itself (random init), loaded both ways."""
    from transformers import XLNetConfig, XLNetLMHeadModel

    torch.manual_seed(0)
    hf = XLNetLMHeadModel(XLNetConfig(vocab_size=50, d_model=16, n_layer=2, n_head=2, d_inner=24, mem_len=None,
                                      dropout=0.0)).eval()
    hf.save_pretrained(tmp_path)
    ours = load_hf_xlnet(tmp_path).eval()
    ids = torch.randint(0, 50, (2, 6))
    assert_close(ours.forward_hf(ids)[0], hf(ids).logits)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        load_hf_xlnet(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="not 'xlnet'"):
        load_hf_xlnet(tmp_path)


@torch.no_grad()
def test_uni_batched_with_target_mapping():
    m = random_model(tiny_config(attn_type="uni", mem_len=5), seed=12)
    hf = hf_twin(m)
    ids, _, _, tm = rand_perm_inputs(3, 8, 3, seed=13)
    l1, mems = m.forward_hf(ids)
    r1 = hf(ids, use_mems=True)
    assert_close(l1, r1.logits)
    assert_close(m.forward_hf(ids, target_mapping=tm, mems=mems)[0],
                 hf(ids, target_mapping=tm, mems=r1.mems).logits)
