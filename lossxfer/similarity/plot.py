"""`cka --plot`: the CKA matrix as a heatmap, one column wide (lossxfer.plotting's style).

Colours span the matrix's own range, so that 0.91 and 1.00 look different, and each cell has
its value; a layer stored twice under two names (lossxfer.layers) is shown once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from lossxfer.results import Result

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_heatmap(result: Result, path: str | os.PathLike[str], force: bool = False) -> Path:
    """Draw the heatmap to `path`: PNG, SVG or PDF by its suffix."""
    from lossxfer.plotting import save_figure

    return save_figure(heatmap_figure(result), path, force)


def heatmap_figure(result: Result) -> Figure:
    """Rows: layers of A; columns: layers of B; colours over the values' range, values in cells."""
    from lossxfer.layers import identical_layers
    from lossxfer.plotting import COLUMN_WIDTH, heatmap, new_figure, style

    m = result.metrics
    rows, cols, matrix = list(m["layers_a"]), list(m["layers_b"]), m["matrix"]
    same = identical_layers(rows, cols, matrix)
    keep_r = [i for i, name in enumerate(rows) if name not in same]
    keep_c = [j for j, name in enumerate(cols) if name not in same]
    values = [[_number(matrix[i][j]) for j in keep_c] for i in keep_r]
    rows, cols = [rows[i] for i in keep_r], [cols[j] for j in keep_c]
    width = max(COLUMN_WIDTH, 1.4 + 0.32 * len(cols))
    fig = new_figure(height=max(2.2, 1.2 + 0.26 * len(rows)), width=width)
    ax = fig.axes[0]
    model_a, model_b = result.model, m.get("model_b") or {}
    title = f"{m['estimator']} CKA, {m['split']} split"
    if same:
        title += "\n" + "; ".join(f"{a} = {b} (shown once)" for a, b in same.items())
    with style():
        heatmap(ax, values, rows, cols, "CKA")
        ax.set_ylabel(f"layers of A ({model_a.get('objective', 'store A')})")
        ax.set_xlabel(f"layers of B ({model_b.get('objective', 'store B')})")
        ax.set_title(title)
    return fig


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")
