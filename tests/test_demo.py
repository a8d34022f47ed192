"""The README demo's plumbing (the full run itself is measured by hand; see experiments/results/demo/)."""

from __future__ import annotations

import importlib

import pytest

from plmgen import demo as demo_mod

prepare_mod = importlib.import_module("plmgen.data.prepare")  # plmgen.data re-exports a function of that name


class Stop(Exception):
    pass


@pytest.mark.parametrize("src,tgt,out", [("de", "en", "runs/demo"), ("fr", "en", "runs/demo-fr-en")])
def test_demo_prepares_the_requested_pair_into_its_own_folders(monkeypatch, src, tgt, out):
    seen = {}

    def fake_prepare(name, out=None, src=None, tgt=None, **kw):
        seen.update(name=name, data=out, src=src, tgt=tgt)
        raise Stop

    def fake_full(out_dir, *args, **kw):
        seen["out"] = str(out_dir)
        return real_full(out_dir, *args, **kw)

    real_full = demo_mod.full_demo
    monkeypatch.setattr(prepare_mod, "prepare", fake_prepare)
    monkeypatch.setattr(demo_mod, "full_demo", fake_full)
    with pytest.raises(Stop):
        demo_mod.demo(src=src, tgt=tgt)
    assert seen == {"name": "lo-de-en", "data": None, "src": src, "tgt": tgt, "out": out}
