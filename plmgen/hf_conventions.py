"""A forward in Hugging Face XLNet's tensor conventions, for people porting HF code and for parity tests.

HF: ``perm_mask`` 1 = i may NOT attend to j, ``target_mapping`` one-hot float [B, P, T], mems per layer [mlen, B, d].
plmgen: bool masks True = may attend, ``target_pos`` [B, P] indices, mems per layer [B, mlen, d]. Checkpoint
import/export lives in ``plmgen.hf``; this module imports nothing from plmgen, so ``XLNet.forward_hf`` can use it
without an import cycle.
"""

from __future__ import annotations

import torch
from torch import Tensor


def forward_hf(model: torch.nn.Module, input_ids: Tensor, token_type_ids: Tensor | None = None,
               perm_mask: Tensor | None = None, target_mapping: Tensor | None = None,
               mems: list[Tensor] | None = None, bi_data: bool = False,
               reuse_len: int = 0) -> tuple[Tensor, list[Tensor] | None]:
    """HF-convention forward of a plmgen ``XLNet`` -> (logits [B, P or T, V], new_mems as per-layer [mlen, B, d]
    or None). ``bi_data``/``reuse_len`` are what HF keeps in its model config (plmgen: data settings)."""
    B, T = input_ids.shape
    content = query = target_pos = None
    if perm_mask is not None:
        allowed = perm_mask <= 0.5  # HF: 1 = i may NOT attend to j
        content = allowed | torch.eye(T, dtype=torch.bool, device=allowed.device)[None]
        query = allowed
    if target_mapping is not None:
        tm = target_mapping.float()
        if not bool(((tm == 0) | (tm == 1)).all()) or not bool((tm.sum(-1) == 1).all()):
            raise ValueError("target_mapping must be one-hot: exactly one 1 per prediction row")
        target_pos = tm.argmax(-1)
        if query is not None:
            query = torch.gather(query, 1, target_pos[:, :, None].expand(-1, -1, T))
    our_mems = [m.transpose(0, 1) for m in mems] if mems is not None else None
    out = model(input_ids, seg_ids=token_type_ids, content_mask=content, query_mask=query,
                target_pos=target_pos, mems=our_mems, bi_data=bi_data, reuse_len=reuse_len)
    logits = model.logits(out.g if out.g is not None else out.h)
    new_mems = [m.transpose(0, 1) for m in out.mems] if out.mems is not None else None
    return logits, new_mems
