"""Figure conventions shared by `report --plots` and `cka --plot` (matplotlib, no pyplot state).

One-column sizes (3.4 in wide, as in a two-column paper) with 8-pt text, so figures go into a
paper unscaled; PNG (150 dpi), SVG (text kept as text) and PDF; CKA heatmaps coloured over the
data's own range with the value written in each cell.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLUMN_WIDTH = 3.4  # inches: one column of a two-column paper
EXTENSIONS = ("png", "svg", "pdf")
STYLE: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",  # labels stay text: editable in the paper, searchable in tests
    "svg.hashsalt": "lossxfer",  # the same figure gives the same file
    "pdf.fonttype": 42,  # TrueType, which journals accept (Type 3 they often do not)
}


def style() -> AbstractContextManager[None]:
    """The house style, for as long as figures are built or saved."""
    from matplotlib import rc_context

    return rc_context(STYLE)  # type: ignore[arg-type]


def new_figure(height: float = 2.6, width: float = COLUMN_WIDTH) -> Figure:
    """A figure with one axes, in the house style (applied when it is created and saved)."""
    from matplotlib.figure import Figure

    with style():
        fig = Figure(figsize=(width, height), layout="constrained")
        fig.add_subplot()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], force: bool = False) -> Path:
    """Write one figure atomically, in the format its suffix names (png, svg or pdf)."""
    from lossxfer.fsio import atomic_path

    out = Path(path)
    ext = out.suffix.lower().lstrip(".") or "png"
    # no creation date: the same figure gives the same file
    metadata = {"CreationDate": None} if ext == "pdf" else {"Date": None} if ext == "svg" else {}
    with style(), atomic_path(out, force) as tmp:
        fig.savefig(tmp, format=ext, dpi=150, metadata=metadata)
    return out


def heatmap(
    ax: Axes,
    matrix: Sequence[Sequence[float]],
    rows: list[str],
    cols: list[str],
    label: str,
    triangle: bool = False,
) -> None:
    """CKA values as colours over the data's range (so 0.91 and 1.00 differ), written in cells.

    Missing values (NaN) show a grey dash; `triangle` (a symmetric matrix) shows each pair once,
    above the diagonal. The colour bar is labelled `label`."""
    import numpy as np

    data = np.array(matrix, dtype=float)
    hidden = np.tril(np.ones(data.shape, bool), -1) if triangle else np.zeros(data.shape, bool)
    finite = data[np.isfinite(data) & ~hidden]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high - low < 1e-6:  # one value: any range shows it; keep the colour mid-scale
        low, high = low - 0.05, high + 0.05
    with style():
        shown = np.ma.masked_array(data, mask=~np.isfinite(data) | hidden)
        image = ax.imshow(shown, vmin=low, vmax=high, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(len(rows)), rows)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        bar = ax.figure.colorbar(image, ax=ax, label=label, fraction=0.05, pad=0.02)
        bar.ax.tick_params(labelsize=6)
        size = 7 if data.size <= 36 else 6 if data.size <= 64 else 5
        digits = 3 if high - low < 0.1 else 2  # enough to tell the cells apart
        if data.size > 400:  # beyond that, numbers no longer fit their cells
            return
        for (i, j), value in np.ndenumerate(data):
            if hidden[i, j]:
                continue
            if not math.isfinite(value):
                ax.text(j, i, "–", ha="center", va="center", fontsize=size, color="0.6")
                continue
            # dark text on the light (yellow) end of viridis, light text on the dark end
            color = "black" if (value - low) / (high - low) > 0.55 else "white"
            text = f"{value:.{digits}f}"
            if data.shape[1] > 6:  # narrow cells: .977, as papers print them
                text = text.removeprefix("0")
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color=color)
