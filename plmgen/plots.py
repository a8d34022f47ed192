"""Plots of decoding behaviour: where an order fills the target (heat-map) and BLEU against decoding steps.

Inputs are plain Python data (trace records from ``generate --trace``, result rows from ``--orders``), so the
plots can be re-drawn from saved files without a model. PNGs are written atomically.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from plmgen.files import fsync_file, temp_beside


def _save(fig, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path, ".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _spread(i: int, n: int, bins: int) -> list[tuple[int, float]]:
    """(bin, share) pairs: slot i of n covers [i/n, (i+1)/n) of the axis, split over the bins it overlaps."""
    a, b = i * bins / n, (i + 1) * bins / n
    return [(k, (min(b, k + 1) - max(a, k)) / (b - a)) for k in range(int(a), min(bins, math.ceil(b)))
            if min(b, k + 1) > max(a, k)]


def order_matrix(traces: Sequence[dict], bins: int = 10) -> np.ndarray:
    """[bins (relative step), bins (relative position)] share of filled slots, from trace records.

    A record holds ``length`` (target slots) and ``steps`` (list of lists of 0-based target positions filled at
    each step). Step and position are both scaled to [0, 1) so sentences of different lengths add up; a slot is
    split over the bins its interval overlaps (not dropped into the bin of its left edge), so an order and its
    mirror image give mirror-image matrices - strictly right-to-left is exactly the anti-diagonal of
    left-to-right. Each row (a step bin) sums to 1, i.e. it shows where in the sentence that phase writes.
    """
    m = np.zeros((bins, bins))
    for rec in traces:
        L, steps = int(rec["length"]), rec["steps"]
        n = len(steps)
        for s, filled in enumerate(steps):
            rows = _spread(s, n, bins)
            for p in filled:
                for (i, wi) in rows:
                    for (j, wj) in _spread(int(p), L, bins):
                        m[i, j] += wi * wj
    rows = m.sum(1, keepdims=True)
    return np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)


def order_heatmap(traces_by_order: dict[str, Sequence[dict]], path: str | os.PathLike, bins: int = 10) -> None:
    """One heat-map panel per order: relative decoding step (y) × relative target position (x); when every
    sentence has the same length, one bin per position."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(traces_by_order)
    lengths = {int(r["length"]) for traces in traces_by_order.values() for r in traces}
    if len(lengths) == 1 and 0 < min(lengths) <= 2 * bins:  # one length: one bin per slot and per step, exact
        bins = lengths.pop()
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        im = ax.imshow(order_matrix(traces_by_order[name], bins), origin="upper", aspect="auto", vmin=0, vmax=1,
                       extent=(0, 1, 1, 0), cmap="viridis")
        ax.set_title(name)
        ax.set_xlabel("relative target position")
    axes[0][0].set_ylabel("relative decoding step")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="share of slots filled")
    _save(fig, path)
    plt.close(fig)


def bleu_vs_steps(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """BLEU (y) against mean decoding steps per sentence (x), one point per row labelled by its order/length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for r in rows:
        ax.scatter(r["steps"], r["BLEU"])
        ax.annotate(f"{r['order']} ({r['length']})", (r["steps"], r["BLEU"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("decoding steps per sentence (mean)")
    ax.set_ylabel("BLEU")
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)
