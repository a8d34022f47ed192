"""mask-plm: row layout and mask by brute force, reachability (no prediction reaches its own or a later true
token), equivalence of the A rows with the backbone's own forward, model-level perturbation."""

import pytest
import torch

from plmgen.config import ObjectiveConfig
from plmgen.objectives.base import SpecialIds
from plmgen.objectives.mask_plm import layout_from_order, mask_plm_layout, rows_forward

from objectives.helpers import assert_perturbation, make_batch, naive_may_see, tiny_model

SPECIAL = SpecialIds()


def naive_row_mask(lay, valid, R, b):
    """[L][K] from the definitions: A sees A; C sees A + itself + lower-ranked C; Q sees A + lower-ranked C."""
    T, P = lay.T, lay.P
    rank = lay.rank[b].tolist()
    vd = valid[b].tolist()
    tp, tv = lay.target_pos[b].tolist(), lay.target_valid[b].tolist()
    rows = [("A", i) for i in range(T)] + [("C", p) for p in range(P)] + [("Q", p) for p in range(P)]
    keys = rows[: T + P]

    def pos(kind, k):
        return k if kind == "A" else tp[k]

    out = []
    for kind, r in rows:
        line = []
        for kk, k in keys:
            i, j = pos(kind, r), pos(kk, k)
            key_ok = vd[k] if kk == "A" else tv[k]
            if R and i < R and j >= R:
                ok = False
            elif R and i >= R and j < R:
                ok = key_ok
            elif kk == "A":
                ok = key_ok or (kind == "A" and r == k)
            elif kind == "A":
                ok = False
            else:  # C or Q row reading a true-token row
                ok = key_ok and (rank[tp[k]] < rank[tp[r]] or (kind == "C" and k == r))
            line.append(ok)
        out.append(line)
    return out


@pytest.mark.parametrize("reuse_len", [0, 6])
def test_layout_brute_force_and_no_reachable_leak(reuse_len):
    cfg = ObjectiveConfig(name="mask-plm", K=3)
    for seed in range(3):
        batch = make_batch(3, 16, seed, reuse_len=reuse_len)
        lay = mask_plm_layout(batch, cfg, SPECIAL, torch.Generator().manual_seed(seed))
        T, P = lay.T, lay.P
        ids = batch["input_ids"]
        for b in range(3):
            assert lay.mask[b].tolist() == naive_row_mask(lay, batch["valid"], reuse_len, b)
            tp, tv = lay.target_pos[b], lay.target_valid[b]
            tgt = lay.rank[b] >= 0
            assert (lay.input_ids[b, :T][tgt] == SPECIAL.mask_id).all()
            assert (lay.input_ids[b, :T][~tgt] == ids[b][~tgt]).all()
            assert (lay.input_ids[b, T : T + P][tv] == ids[b, tp[tv]]).all()
            assert (lay.input_ids[b, T + P :] == SPECIAL.mask_id).all()
            # reachability over keys: closure of the key-to-key graph
            K = T + P
            reach = lay.mask[b, :, :K].clone()
            for _ in range(4):
                reach = reach | ((reach.float() @ lay.mask[b, :K, :K].float()) > 0)
            for p in range(P):
                if not tv[p]:
                    continue
                r = int(lay.rank[b, tp[p]])
                later_true = [T + q for q in range(P) if tv[q] and int(lay.rank[b, tp[q]]) >= r]
                assert not reach[T + P + p, later_true].any(), "a prediction reaches its own or a later true token"


def test_a_rows_equal_backbone_forward_with_memory():
    model = tiny_model(initializer_range=0.3, mem_len=8).eval()
    batch = make_batch(2, 12, 1)
    lay = mask_plm_layout(batch, ObjectiveConfig(name="mask-plm", K=3), SPECIAL, torch.Generator().manual_seed(1))
    mems = [torch.randn(2, 5, 32) for _ in range(2)]
    with torch.no_grad():
        rows, new_mems = rows_forward(model, lay, mems)
        ref = model(lay.input_ids[:, : lay.T], seg_ids=batch["seg_ids"], content_mask=lay.mask[:, : lay.T, : lay.T],
                    mems=mems)
    torch.testing.assert_close(rows[:, : lay.T], ref.h, atol=1e-5, rtol=1e-5)
    for a, b in zip(new_mems, ref.mems):
        torch.testing.assert_close(a, b)


def test_model_level_leaks():
    R = 5
    model = tiny_model(initializer_range=0.3).eval()
    batch = make_batch(2, 14, 2, reuse_len=R)
    lay = mask_plm_layout(batch, ObjectiveConfig(name="mask-plm", K=3), SPECIAL, torch.Generator().manual_seed(2))
    T, P = lay.T, lay.P

    def run(ids):
        l2 = layout_from_order(ids, batch["valid"], batch["seg_ids"], lay.rank, R, P, SPECIAL)
        with torch.no_grad():
            return model.logits(rows_forward(model, l2)[0][:, T + P :])

    base = run(batch["input_ids"])
    for b in range(2):
        rank, vd = lay.rank[b].tolist(), batch["valid"][b].tolist()
        preds = [p for p in range(P) if lay.target_valid[b, p]]
        for j in range(T):
            hidden, seen = [], []
            for p in preds:
                t = int(lay.target_pos[b, p])
                if not vd[j] or (R and t < R <= j):
                    hidden.append(p)  # padding, or the rest seen from the reuse part
                elif rank[j] >= 0 and not (R and j < R <= t) and rank[j] >= rank[t]:
                    hidden.append(p)  # its own or a later target's true token
                elif naive_may_see(rank, vd, R, t, j, "query") or (R and j < R <= t):
                    seen.append(p)
            assert_perturbation(run, batch["input_ids"], base, b, j, hidden, seen)
