"""Order heat-map matrix and the PNG writers."""

import numpy as np

from plmgen.plots import bleu_vs_steps, order_heatmap, order_matrix


def test_left_to_right_traces_fill_the_diagonal():
    traces = [{"length": n, "steps": [[i] for i in range(n)]} for n in (5, 10, 20)]
    m = order_matrix(traces, bins=5)
    np.testing.assert_allclose(m, np.eye(5))


def test_parallel_steps_spread_over_their_positions():
    m = order_matrix([{"length": 4, "steps": [[0, 3], [1, 2]]}], bins=2)
    np.testing.assert_allclose(m, [[0.5, 0.5], [0.5, 0.5]])  # each step writes one slot in each half
    np.testing.assert_allclose(m.sum(1), 1.0)


def test_plots_write_pngs(tmp_path):
    traces = {"l2r": [{"length": 3, "steps": [[0], [1], [2]]}], "r2l": [{"length": 3, "steps": [[2], [1], [0]]}]}
    order_heatmap(traces, tmp_path / "h.png")
    bleu_vs_steps([{"order": "l2r", "length": "predict", "BLEU": 3.0, "steps": 10.0}], tmp_path / "b.png")
    for name in ("h.png", "b.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_right_to_left_is_the_exact_mirror_of_left_to_right():
    """Mixed lengths that do not divide the bins: r2l must be l2r mirrored, not smeared off the anti-diagonal."""
    lengths = (3, 7, 11, 13)
    l2r = order_matrix([{"length": n, "steps": [[i] for i in range(n)]} for n in lengths], bins=10)
    r2l = order_matrix([{"length": n, "steps": [[n - 1 - i] for i in range(n)]} for n in lengths], bins=10)
    np.testing.assert_allclose(r2l, np.fliplr(l2r), atol=1e-12)
    np.testing.assert_allclose(np.fliplr(order_matrix([{"length": 7, "steps": [[6 - i] for i in range(7)]}], bins=7)),
                               np.eye(7))
