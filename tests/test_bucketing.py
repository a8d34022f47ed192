"""Length-bucketed parallel batches (data.batch_tokens) and label smoothing."""

import torch
import torch.nn.functional as F

from plmgen.data.parallel import PairBatches, PairCollate, PairDataset, bucket_batches
from plmgen.objectives.base import masked_ce


def pairs(n: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        s, t = torch.randint(1, 30, (2,), generator=g).tolist()
        out.append((list(range(10, 10 + s)), list(range(10, 10 + t))))
    return out


def test_every_pair_once_per_epoch_within_the_token_budget_and_tighter_than_random():
    ps = pairs()
    lengths = torch.tensor([len(s) + 1 + len(t) for s, t in ps])
    perm = torch.randperm(len(ps), generator=torch.Generator().manual_seed(1))
    batches = bucket_batches(lengths, perm, batch_tokens=256, seed=1, chunk=100)
    seen = torch.cat(batches)
    assert sorted(seen.tolist()) == list(range(len(ps)))
    assert all(len(b) * int(lengths[b].max()) <= 256 for b in batches)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    # the same number of batches drawn at random would pad far more
    chunks = torch.tensor_split(perm, len(batches))
    random_padded = sum(len(c) * int(lengths[c].max()) for c in chunks)
    assert padded < 0.8 * random_padded
    assert [b.tolist() for b in batches] == [b.tolist() for b in bucket_batches(lengths, perm, 256, 1, 100)]


def test_bucketed_batch_k_is_a_pure_function_of_k_across_epochs_and_ranks():
    ds, collate = PairDataset(pairs(120)), PairCollate(sep_id=4, pad_id=5)
    a = PairBatches(ds, collate, 4, seed=3, batch_tokens=200)
    n_epoch = len(a.epoch_batches(0))
    ks = [0, 1, n_epoch - 1, n_epoch, n_epoch + 2, 3 * n_epoch]
    fresh = {k: PairBatches(ds, collate, 4, seed=3, batch_tokens=200).batch(k)["input_ids"] for k in reversed(ks)}
    for k in ks:
        assert torch.equal(a.batch(k)["input_ids"], fresh[k])
    assert not torch.equal(a.batch(0)["input_ids"], a.batch(n_epoch)["input_ids"])  # epochs reshuffle
    r0 = PairBatches(ds, collate, 4, seed=3, world=2, rank=0, batch_tokens=200).epoch_batches(0)
    r1 = PairBatches(ds, collate, 4, seed=3, world=2, rank=1, batch_tokens=200).epoch_batches(0)
    assert len(r0) == len(r1) and not set(torch.cat(r0).tolist()) & set(torch.cat(r1).tolist())
    it = iter(PairBatches(ds, collate, 4, seed=3, batch_tokens=200, start=n_epoch + 2))
    assert torch.equal(next(it)["input_ids"], fresh[n_epoch + 2])  # resume mid-stream


def test_label_smoothing_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(2, 5, 11, generator=g), torch.randint(0, 11, (2, 5), generator=g)
    valid = torch.rand(2, 5, generator=g) > 0.3
    loss, n = masked_ce(logits, labels, valid, smoothing=0.1)
    logp = logits.log_softmax(-1)
    want = (0.9 * -logp.gather(-1, labels[..., None])[..., 0] + 0.1 * -logp.mean(-1))[valid].mean()
    torch.testing.assert_close(loss, want)
    assert n == int(valid.sum())
    assert not torch.allclose(loss, masked_ce(logits, labels, valid)[0])
    torch.testing.assert_close(masked_ce(logits, labels, valid)[0],
                               F.cross_entropy(logits[valid], labels[valid]))
    torch.testing.assert_close(loss, F.cross_entropy(logits[valid], labels[valid], label_smoothing=0.1))


def test_locating_a_batch_does_not_rebucket_earlier_epochs(monkeypatch):
    import plmgen.data.parallel as par

    ds, collate = PairDataset(pairs(120)), PairCollate(sep_id=4, pad_id=5)
    a = PairBatches(ds, collate, 4, seed=3, batch_tokens=200)
    calls = []
    real = par.bucket_batches
    monkeypatch.setattr(par, "bucket_batches", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    n = len(a.epoch_batches(0))
    for k in range(3 * n, 3 * n + 5):  # five batches of epoch 3
        a.batch(k)
    assert len(calls) <= 4  # epochs 0..3 once each (epoch 0 may be cached already), not once per batch
