"""``joint``: a weighted mixture of objectives on the same batch, e.g. ``mixture: "plm:1,mass:1"``.

total loss = Σ wᵢ·lossᵢ. Terms are named by sub-objective: a sub-objective's own term keeps its name (``plm``,
``mass``), its extra terms get the prefix (``plm/nsp``), each weighted by wᵢ times its weight inside the
sub-objective — so ``loss == Σ weights[k]·terms[k]`` over the flat dict, like every objective.

Memory: carried for one sub-objective only — the first one in the mixture that uses memory. It receives the
incoming mems and its new mems are returned; the others run without memory (their hidden states differ from the
designated one's, so mixing them into one cache would make the cache depend on the mixture). ``nsp_weight`` applies
once, on the first sub-objective.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from plmgen.batch import Batch
from plmgen.config import ModelConfig, ObjectiveConfig, parse_mixture

from .base import Objective, ObjectiveOutput, SpecialIds, combine


class JointObjective(Objective):
    name = "joint"

    def __init__(self, cfg: ObjectiveConfig, model_cfg: ModelConfig, special: SpecialIds | None = None):
        super().__init__(dataclasses.replace(cfg, nsp_weight=0.0), model_cfg, special)
        from . import build_objective  # the registry imports this module

        self.mixture = parse_mixture(cfg.mixture)
        subs = {}
        for i, (name, _) in enumerate(self.mixture):
            sub_cfg = dataclasses.replace(cfg, name=name, nsp_weight=cfg.nsp_weight if i == 0 else 0.0)
            subs[name] = build_objective(sub_cfg, model_cfg, self.special)
        self.subs = nn.ModuleDict(subs)
        self.mem_owner = next((n for n, _ in self.mixture if self.subs[n].uses_mems), None)
        self.uses_mems = self.mem_owner is not None

    def sample(self, batch: Batch, generator=None) -> list:
        return [self.subs[name].sample(batch, generator) for name, _ in self.mixture]

    def forward(self, model, batch: Batch, mems=None, generator=None) -> ObjectiveOutput:
        terms, weights, n_tokens, new_mems = {}, {}, {}, None
        for name, w in self.mixture:
            own = name == self.mem_owner
            out = self.subs[name](model, batch, mems if own else None, generator)
            for k, t in out.terms.items():
                key = name if k == name else f"{name}/{k}"
                terms[key], weights[key], n_tokens[key] = t, w * out.weights[k], out.n_tokens[k]
            if own:
                new_mems = out.mems
        return combine(terms, weights, n_tokens, new_mems)


OBJECTIVE = JointObjective
