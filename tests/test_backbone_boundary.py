"""One way into the backbone: outside plmgen/model.py and plmgen/attention.py nothing reaches into its parts.

Callers go through ``XLNet.forward`` / ``XLNet.run`` (with ``Rows``, memory or a ``KVCache``), ``logits``, ``biases``
and ``cfg``. The check reads attribute accesses from the syntax tree (string literals such as HF parameter names
do not count)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTERNALS = {"word_embedding", "mask_emb", "layers", "rel_attn", "keys_values", "project_table", "layer_step",
             "run_layers", "cache_mem", "_row_mask", "_layer_inputs", "r_w_bias", "r_r_bias", "r_s_bias", "lm_bias"}
OWNERS = {"plmgen/model.py", "plmgen/attention.py"}


def internal_accesses(text: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Attribute) and node.attr in INTERNALS:
            found.append(f"line {node.lineno}: .{node.attr}")
        if (isinstance(node, ast.Attribute) and node.attr == "dropout" and isinstance(node.value, ast.Name)
                and node.value.id == "model"):
            found.append(f"line {node.lineno}: model.dropout")
    return found


def test_the_checker_sees_a_reach_into_the_backbone():
    assert internal_accesses("x = model.layers[0].rel_attn.keys_values(h)")
    assert internal_accesses("y = model.dropout(model.word_embedding(ids))")
    assert not internal_accesses('sd["word_embedding.weight"]; model.run(rows); model.logits(g)')


def test_no_module_outside_the_backbone_touches_its_internals():
    offenders = {}
    for path in sorted([*(ROOT / "plmgen").rglob("*.py"), *(ROOT / "experiments").rglob("*.py"), ROOT / "cli.py"]):
        rel = path.relative_to(ROOT).as_posix()
        if rel not in OWNERS and (hits := internal_accesses(path.read_text(encoding="utf-8"))):
            offenders[rel] = hits
    assert not offenders, f"reach into the backbone's internals (use XLNet.run / KVCache): {offenders}"
