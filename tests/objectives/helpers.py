"""Shared test helpers for the objectives: random pretrain-like batches, tiny models, naive masks, perturbation."""

from __future__ import annotations

import torch

from plmgen.config import ModelConfig
from plmgen.model import XLNet

V = 64  # tiny vocab; ids 0..8 are special
SEP, CLS, PAD = 4, 3, 5


def make_batch(B: int, T: int, seed: int, reuse_len: int = 0, pad: bool = True, ab: bool = True) -> dict:
    """[reuse | A <sep> B <sep> <cls>] rows of random ordinary tokens; rows after the first are shorter if pad."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(9, V, (B, T), generator=g)
    valid = torch.zeros(B, T, dtype=torch.bool)
    seg = torch.zeros(B, T, dtype=torch.long)
    func = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        lo = max(reuse_len + 5, T // 2)
        n = T if (b == 0 or not pad) else int(torch.randint(lo, T + 1, (1,), generator=g))
        valid[b, :n] = True
        ids[b, n:] = PAD
        if ab:
            sep1 = int(torch.randint(reuse_len + 1, n - 3, (1,), generator=g))
            ids[b, sep1], ids[b, n - 2], ids[b, n - 1] = SEP, SEP, CLS
            seg[b, sep1 + 1 : n - 1] = 1
            seg[b, n - 1] = 2
            func[b, [sep1, n - 2, n - 1]] = True
    func |= ~valid
    batch = dict(input_ids=ids, seg_ids=seg, valid=valid, functional=func,
                 is_next=torch.randint(0, 2, (B,), generator=g))
    if reuse_len:
        batch["reuse_len"] = reuse_len
    return batch


def tiny_model(seed: int = 0, **overrides) -> XLNet:
    """A tiny random XLNet; large init so every visible token visibly moves the logits (leak tests)."""
    torch.manual_seed(seed)
    kw = dict(vocab_size=V, d_model=32, n_layer=2, n_head=4, d_inner=64, dropout=0.0, dropatt=0.0, mem_len=0)
    kw.update(overrides)
    return XLNet(ModelConfig(**kw))


def naive_may_see(rank: list[int], valid: list[bool], R: int, i: int, j: int, stream: str) -> bool:
    """Position i (a content row, or the query row of the target at i) may attend key j — written from the rules."""
    if R and i < R and j >= R:
        return False  # the reuse part never looks past itself
    if R and i >= R and j < R:
        return valid[j]  # the rest sees all of the reuse part
    if not valid[j]:
        return stream == "content" and i == j
    if stream == "content" and i == j:
        return True
    if rank[j] == -1:
        return True
    if rank[i] == -1:
        return False
    return rank[j] < rank[i]


def targets_by_rank(rank: list[int]) -> list[int]:
    """Target positions listed in prediction order (a loop over ranks)."""
    out = []
    for r in range(max(rank, default=-1) + 1):
        out += [t for t, x in enumerate(rank) if x == r]
    return out


def check_rank_masks(rank: torch.Tensor, valid: torch.Tensor, R: int, masks) -> None:
    """Every (i, j) of the content and query masks equals the naive rule; query rows follow the rank order.

    A target that may see nothing is not scored (a fully masked attention row would attend to everything).
    """
    B, T = rank.shape
    for b in range(B):
        rk, vd = rank[b].tolist(), valid[b].tolist()
        order = [t for t in targets_by_rank(rk) if any(naive_may_see(rk, vd, R, t, j, "query") for j in range(T))]
        scored = masks.target_valid[b].nonzero().flatten().tolist()
        assert masks.target_pos[b, scored].tolist() == order
        for p, t in zip(scored, order):
            for j in range(T):
                assert bool(masks.query[b, p, j]) == naive_may_see(rk, vd, R, t, j, "query"), (b, p, t, j)
        assert not masks.query[b, ~masks.target_valid[b]].any()
        for i in range(T):
            for j in range(T):
                assert bool(masks.content[b, i, j]) == naive_may_see(rk, vd, R, i, j, "content"), (b, i, j)


def influence(rank: torch.Tensor, valid: torch.Tensor, R: int, b: int, t: int) -> set[int]:
    """Tokens that can reach the query row of target t through any chain of content rows (naive closure)."""
    rk, vd = rank[b].tolist(), valid[b].tolist()
    T = len(rk)
    seen = {j for j in range(T) if naive_may_see(rk, vd, R, t, j, "query")}
    frontier = list(seen)
    while frontier:
        k = frontier.pop()
        for j in range(T):
            if j not in seen and naive_may_see(rk, vd, R, k, j, "content"):
                seen.add(j)
                frontier.append(j)
    return seen


def perturb(ids: torch.Tensor, b: int, j: int) -> torch.Tensor:
    out = ids.clone()
    out[b, j] = 9 + (int(ids[b, j]) - 9 + 7) % (V - 9) if ids[b, j] >= 9 else 9 + 11
    return out


def assert_perturbation(run, ids: torch.Tensor, base: torch.Tensor, b: int, j: int, must_not_change: list[int],
                        must_change: list[int]):
    """run(ids) -> [B, P, V] logits, base = run(ids). Perturb token (b, j); listed predictions of row b must (not)
    change."""
    new = run(perturb(ids, b, j))
    for p in must_not_change:
        torch.testing.assert_close(new[b, p], base[b, p], atol=1e-5, rtol=0, msg=f"prediction {p} sees token {j}")
    for p in must_change:
        assert (new[b, p] - base[b, p]).abs().max() > 1e-3, f"prediction {p} should see token {j}"


def check_two_stream_leaks(batch: dict, rank: torch.Tensor, masks, R: int) -> None:
    """Model-level: perturbing a token no chain of attention connects to prediction p leaves p's logits unchanged;
    perturbing one p attends to directly changes them; no prediction is reachable from its own or a later target."""
    model = tiny_model(initializer_range=0.3).eval()
    ids, valid = batch["input_ids"], batch["valid"]
    B, T = ids.shape

    def run(x):
        with torch.no_grad():
            out = model(x, seg_ids=batch["seg_ids"], content_mask=masks.content, query_mask=masks.query,
                        target_pos=masks.target_pos)
            return model.logits(out.g)

    base = run(ids)
    for b in range(B):
        preds = [p for p in range(masks.target_pos.shape[1]) if masks.target_valid[b, p]]
        reach = {p: influence(rank, valid, R, b, int(masks.target_pos[b, p])) for p in preds}
        for p in preds:
            t = int(masks.target_pos[b, p])
            assert not any(rank[b, j] >= rank[b, t] for j in reach[p]), "never its own or a later target"
        for j in range(T):
            hidden = [p for p in preds if j not in reach[p]]
            direct = [p for p in preds if bool(masks.query[b, p, j]) and valid[b, j]]
            assert_perturbation(run, ids, base, b, j, hidden, direct)
