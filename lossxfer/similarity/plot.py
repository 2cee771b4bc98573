"""`cka --plot`: the CKA matrix as a heatmap (matplotlib, no pyplot global state)."""

from __future__ import annotations

import os
from pathlib import Path

from lossxfer.fsio import atomic_path
from lossxfer.results import Result


def plot_heatmap(result: Result, path: str | os.PathLike[str], force: bool = False) -> Path:
    """Rows: layers of A; columns: layers of B; colour bar on [0, 1] (values below 0 are kept)."""
    import numpy as np
    from matplotlib.figure import Figure

    m = result.metrics
    matrix = np.array([[np.nan if v is None else v for v in row] for row in m["matrix"]], float)
    rows, cols = m["layers_a"], m["layers_b"]
    size = (max(4.0, 1.0 + 0.45 * len(cols)), max(3.5, 1.0 + 0.4 * len(rows)))
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    low = min(0.0, float(np.nanmin(matrix))) if np.isfinite(matrix).any() else 0.0
    image = ax.imshow(matrix, vmin=low, vmax=1.0, cmap="magma", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    model_a, model_b = result.model, m.get("model_b") or {}
    ax.set_ylabel(f"layers of A ({model_a.get('objective', 'store A')})")
    ax.set_xlabel(f"layers of B ({model_b.get('objective', 'store B')})")
    ax.set_title(f"CKA ({m['estimator']}, split {m['split']})")
    fig.colorbar(image, ax=ax, label="CKA")
    if matrix.size <= 144:  # small matrices: the numbers too, as in the table
        for (i, j), value in np.ndenumerate(matrix):
            colour = "black" if value > 0.6 else "white"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
    out = Path(path)
    with atomic_path(out, force) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=150)
    return out
