"""`report --plots`: the paper's figures as PNG and SVG (matplotlib, no pyplot global state).

R² vs linear transfer and source vs transfer accuracy (one point per run, coloured by objective,
correlations in the title), a CKA heatmap across objectives at the report's layer, and layer-wise
CKA curves for the same vs different objectives.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from lossxfer.fsio import atomic_path, check_output
from lossxfer.report.records import CkaPair, RunData
from lossxfer.report.tables import RunPoint, correlation, describe_correlation, run_points

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EXTENSIONS = ("png", "svg")


def figures(runs: list[RunData], cka: list[CkaPair], layer: str) -> dict[str, Figure]:
    """Every figure the data allows, by file stem."""
    points = run_points(runs)
    out: dict[str, Figure] = {}
    r2_axis = f"class separation R² ({layer})"
    if fig := _scatter(points, "r2", r2_axis):
        out["r2_vs_transfer"] = fig
    if fig := _scatter(points, "source", "source accuracy (%)"):
        out["source_vs_transfer"] = fig
    at_layer = [p for p in cka if p.layer == layer]
    if at_layer:
        out[f"cka_heatmap_{_slug(layer)}"] = _heatmap(at_layer, layer)
    if len({p.layer for p in cka}) > 1:
        out["cka_layers"] = _layer_curves(cka)
    return out


def write_plots(figs: dict[str, Figure], directory: Path, force: bool) -> list[Path]:
    """Write every figure as PNG and SVG; refuse to overwrite any of them without --force."""
    from matplotlib import rc_context

    paths = {(stem, ext): directory / f"{stem}.{ext}" for stem in figs for ext in EXTENSIONS}
    for path in paths.values():
        check_output(path, force)
    # svg.fonttype none keeps labels as text: editable in the paper, searchable in tests
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "lossxfer"}):
        for (stem, ext), path in paths.items():
            with atomic_path(path, force) as tmp:
                figs[stem].savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
    return list(paths.values())


def _new(title: str, xlabel: str, ylabel: str, size: tuple[float, float] = (6, 4.5)) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig


def _scatter(points: list[RunPoint], x: str, xlabel: str) -> Figure | None:
    """Transfer accuracy against `x`, one point per run, coloured by row (objective)."""
    have = [p for p in points if getattr(p, x) is not None and p.linear is not None]
    corr = correlation(have, x, "linear")
    if not have:
        return None
    title = f"{describe_correlation(corr)}, {corr['runs']} runs" if corr else f"{len(have)} runs"
    fig = _new(title, xlabel, "linear transfer accuracy (%)")
    ax = fig.axes[0]
    scale = 100.0 if x == "source" else 1.0
    grouped = len({p.run.row.setup for p in have}) > 1
    for row in sorted({p.run.row for p in have}):
        mine = [p for p in have if p.run.row == row]
        label = f"{row.label} [{row.setup}]" if grouped else row.label
        xs = [getattr(p, x) * scale for p in mine]
        ax.scatter(xs, [p.linear * 100 for p in mine if p.linear is not None], label=label, s=24)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return fig


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def _heatmap(pairs: list[CkaPair], layer: str) -> Figure:
    """Mean CKA between the runs of every two rows (diagonal: different seeds of one row)."""
    import numpy as np

    rows = sorted({r.row for p in pairs for r in (p.a, p.b)})
    index = {row: i for i, row in enumerate(rows)}
    sums: dict[tuple[int, int], list[float]] = {}
    for p in pairs:
        i, j = index[p.a.row], index[p.b.row]
        sums.setdefault((min(i, j), max(i, j)), []).append(p.value)
    matrix = np.full((len(rows), len(rows)), np.nan)
    for (i, j), values in sums.items():
        matrix[i, j] = matrix[j, i] = _mean(values)
    size = 2.5 + 0.6 * len(rows)
    fig = _new(f"CKA at layer {layer} (mean over pairs of runs)", "objective", "objective")
    fig.set_size_inches(size + 1.5, size)
    ax = fig.axes[0]
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0, cmap="viridis")
    labels = [
        r.label if len({r.setup for r in rows}) == 1 else f"{r.label} [{r.setup}]" for r in rows
    ]
    ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    for (i, j), values in sums.items():
        for a, b in {(i, j), (j, i)}:
            value = _mean(values)
            color = "k" if value > 0.6 else "w"  # readable on viridis yellow and purple
            ax.text(b, a, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, label="CKA")
    return fig


def _layer_curves(pairs: list[CkaPair]) -> Figure:
    """Mean ± std CKA per layer, same objective (other seeds) vs different objectives."""
    layers = list(dict.fromkeys(p.layer for p in pairs))
    fig = _new("CKA by layer", "block index (layer)", "CKA")
    fig.set_size_inches(max(6.0, 0.45 * len(layers) + 2), 4.5)
    ax = fig.axes[0]
    for name, same in (("same objective", True), ("different objectives", False)):
        xs, means, stds = [], [], []
        for i, layer in enumerate(layers):
            values = [p.value for p in pairs if p.layer == layer and (p.a.row == p.b.row) == same]
            if values:
                m = _mean(values)
                xs.append(i)
                means.append(m)
                n = max(len(values) - 1, 1)
                stds.append(math.sqrt(math.fsum((v - m) ** 2 for v in values) / n))
        if xs:
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=name)
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)
