"""`report --plots`: the paper's figures, one column wide, as PNG, SVG and PDF.

- r2_vs_transfer, source_vs_transfer: one point per run, a colour and marker per objective (the
  baseline a black star drawn on top), the least-squares line and Pearson r, p in the corner;
  points on the very same spot are counted (×k) so none hides another;
- transfer_by_dataset (paper Figure 1): linear transfer accuracy minus the baseline's, per
  transfer dataset, when there are several;
- cka_layers: CKA by layer, same objective vs different objectives, the band spanning the
  pairs' minimum to maximum (so it stays inside CKA's [0, 1]);
- cka_heatmap_LAYER: mean CKA between every two objectives, over the data's range, values in
  the cells.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossxfer.fsio import check_output
from lossxfer.plotting import EXTENSIONS, heatmap, new_figure, save_figure, style
from lossxfer.report.records import CkaPair, Gathered, RowKey
from lossxfer.report.tables import RunPoint, correlation, run_points

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "d")
BASELINE_STYLE = {"color": "black", "marker": "*", "s": 120, "zorder": 4}


def figures(found: Gathered, layer: str, baseline: str | None) -> dict[str, Figure]:
    """Every figure the data allows, by file stem."""
    points = run_points(found.runs)
    styles = _styles(sorted({p.run.row for p in points}), baseline)
    out: dict[str, Figure] = {}
    with style():
        r2_axis = f"class separation R² ({layer})"
        if fig := _scatter(points, "r2", r2_axis, 1.0, styles):
            out["r2_vs_transfer"] = fig
        if fig := _scatter(points, "source", "source accuracy (%)", 100.0, styles):
            out["source_vs_transfer"] = fig
        if baseline and (fig := _by_dataset(found, baseline, styles)):
            out["transfer_by_dataset"] = fig
        pairs = [p for p in found.cka if p.a.row.setup == p.b.row.setup]
        at_layer = [p for p in pairs if p.layer == layer]
        if at_layer:
            out[f"cka_heatmap_{_slug(layer)}"] = _heatmap(at_layer, layer)
        shown = [p for p in pairs if p.layer not in found.same_layers]
        if len({p.layer for p in shown}) > 1:
            out["cka_layers"] = _layer_curves(shown)
    return out


def write_plots(figs: dict[str, Figure], directory: Path, force: bool) -> list[Path]:
    """Write every figure as PNG, SVG and PDF; refuse to overwrite any without --force."""
    paths = {(stem, ext): directory / f"{stem}.{ext}" for stem in figs for ext in EXTENSIONS}
    for path in paths.values():
        check_output(path, force)
    for (stem, _), path in paths.items():
        save_figure(figs[stem], path, force)
    return list(paths.values())


def _styles(rows: list[RowKey], baseline: str | None) -> dict[RowKey, dict[str, Any]]:
    """A colour and marker per row, the same in every figure; the baseline a black star."""
    colours = [f"C{i}" for i in range(10)]
    out: dict[RowKey, dict[str, Any]] = {}
    others = [r for r in rows if r.label != baseline]
    for i, row in enumerate(others):
        out[row] = {"color": colours[i % 10], "marker": MARKERS[i % len(MARKERS)], "s": 28}
    out.update({r: dict(BASELINE_STYLE) for r in rows if r.label == baseline})
    return out


def _label(row: RowKey, grouped: bool) -> str:
    return f"{row.label} [{row.setup}]" if grouped else row.label


def _scatter(
    points: list[RunPoint],
    x: str,
    xlabel: str,
    scale: float,
    styles: dict[RowKey, dict[str, Any]],
) -> Figure | None:
    """Linear transfer accuracy against `x`, one point per run, styled by row (objective)."""
    have = [p for p in points if getattr(p, x) is not None and p.linear is not None]
    if not have:
        return None
    rows = sorted({p.run.row for p in have})
    fig = new_figure(height=2.2 + 0.13 * math.ceil(len(rows) / 2))
    ax = fig.axes[0]
    grouped = len({r.setup for r in rows}) > 1
    xy = {id(p): (getattr(p, x) * scale, (p.linear or 0.0) * 100) for p in have}
    from matplotlib.colors import to_rgba

    # the baseline last, on top, as an outline: the points it covers show through
    for row in sorted(rows, key=lambda r: styles[r]["marker"] == "*"):
        mine = [xy[id(p)] for p in have if p.run.row == row]
        style = {"zorder": 3, **styles[row]}
        colour = style.pop("color")
        base = style["marker"] == "*"
        ax.scatter(
            [a for a, _ in mine],
            [b for _, b in mine],
            label=_label(row, grouped),
            facecolors="none" if base else to_rgba(colour, 0.35),  # overlaps show through
            edgecolors=colour,
            linewidths=1.0 if base else 0.9,
            **style,
        )
    ax.margins(x=0.08, y=0.1)
    corr = correlation(have, x, "linear")
    if corr is not None:
        _fit_line(ax, list(xy.values()))
        text = f"r = {corr['pearson_r']:.2f}, p = {corr['pearson_p']:.2g}\n{corr['runs']} runs"
    else:
        text = f"{len(have)} runs"
    corner = _emptiest_corner(ax, list(xy.values()))
    for (a, b), k in Counter(xy.values()).items():
        if k > 1:  # runs on the very same spot: say how many, on the side away from the edge
            right = ax.transLimits.transform((a, b))[0] > 0.8
            ax.annotate(
                f"×{k}",
                (a, b),
                xytext=(-5 if right else 5, 4),
                textcoords="offset points",
                ha="right" if right else "left",
                fontsize=6,
            )
    box = {"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": "0.8", "alpha": 0.85}
    (cx, ha), (cy, va) = corner
    ax.text(cx, cy, text, transform=ax.transAxes, ha=ha, va=va, fontsize=7, bbox=box)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("linear transfer accuracy (%)")
    ax.grid(alpha=0.25, linewidth=0.5)
    _legend(fig, ax)
    return fig


def _emptiest_corner(ax: Axes, xy: list[tuple[float, float]]) -> tuple[Any, Any]:
    """((x, ha), (y, va)) of the axes corner with the fewest points near it, for the r, p box."""
    ax.autoscale_view()
    where = [ax.transLimits.transform(p) for p in xy]
    corners = [((0.98, "right"), (0.97, "top")), ((0.02, "left"), (0.97, "top"))]
    corners += [((0.98, "right"), (0.03, "bottom")), ((0.02, "left"), (0.03, "bottom"))]

    def crowd(corner: tuple[Any, Any]) -> int:
        (cx, _), (cy, _) = corner
        return sum(abs(px - cx) < 0.4 and abs(py - cy) < 0.3 for px, py in where)

    return min(corners, key=crowd)


def _legend(fig: Figure, ax: Axes) -> None:
    """Beneath the axes, in table order with the baseline (drawn last, on top) first; two
    columns where long labels would not fit three across one column's width."""
    handles, labels = ax.get_legend_handles_labels()
    if handles and getattr(handles[-1], "get_zorder", lambda: 0)() >= 4:
        handles, labels = [handles[-1], *handles[:-1]], [labels[-1], *labels[:-1]]
    columns = 3 if max(map(len, labels), default=0) <= 16 else 2
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=columns,
        frameon=False,
        handletextpad=0.2,
        columnspacing=1.0,
        markerscale=0.8,
    )


def _fit_line(ax: Axes, xy: list[tuple[float, float]]) -> None:
    """The least-squares line through the points, across their x range."""
    import numpy as np

    xs, ys = np.array([a for a, _ in xy]), np.array([b for _, b in xy])
    if np.ptp(xs) == 0:
        return
    slope, intercept = np.polyfit(xs, ys, 1)
    line = np.array([xs.min(), xs.max()])
    ax.plot(line, slope * line + intercept, "--", color="0.45", linewidth=0.8, zorder=1)


def _by_dataset(
    found: Gathered, baseline: str, styles: dict[RowKey, dict[str, Any]]
) -> Figure | None:
    """Paper Figure 1: each objective's linear transfer accuracy minus the baseline's, per
    transfer dataset (mean over seeds; bars: sample std over its seeds)."""
    import numpy as np

    runs = [r for r in found.runs if "linear" in r.by_dataset]
    datasets = sorted({ds for r in runs for ds in r.by_dataset["linear"]})
    setups = {r.key.row.setup for r in runs}
    if len(datasets) < 2 or len(setups) != 1:
        return None

    def values(row: RowKey, ds: str) -> list[float]:
        return [
            v * 100 for r in runs if r.key.row == row and (v := r.get("linear", ds)) is not None
        ]

    rows = sorted({r.key.row for r in runs})
    base = next((r for r in rows if r.label == baseline), None)
    if base is None:
        return None
    others = [r for r in rows if r != base]
    fig = new_figure(height=2.4 + 0.12 * math.ceil(len(others) / 3))
    ax = fig.axes[0]
    width = 0.8 / max(len(others), 1)
    for i, row in enumerate(others):
        xs, means, stds = [], [], []
        for j, ds in enumerate(datasets):
            mine, ref = values(row, ds), values(base, ds)
            if mine and ref:
                xs.append(j - 0.4 + width * (i + 0.5))
                means.append(float(np.mean(mine)) - float(np.mean(ref)))
                stds.append(float(np.std(mine, ddof=1)) if len(mine) > 1 else 0.0)
        style = styles[row]
        ax.errorbar(
            xs,
            means,
            yerr=stds,
            fmt=style["marker"],
            color=style["color"],
            markersize=4,
            capsize=1.5,
            elinewidth=0.7,
            label=row.label,
        )
    ax.axhline(0.0, color="black", linewidth=0.8, zorder=1)
    ax.margins(y=0.12)  # 0 (the baseline) never on the frame
    ax.set_xticks(range(len(datasets)), datasets, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_ylabel("Δ linear transfer (pp)")
    ax.set_title(f"difference from {baseline}, per transfer dataset")
    ax.set_xlabel("transfer dataset")
    ax.grid(axis="y", alpha=0.25, linewidth=0.5)
    _legend(fig, ax)
    return fig


def _heatmap(pairs: list[CkaPair], layer: str) -> Figure:
    """Mean CKA between the runs of every two rows (diagonal: different seeds of one row)."""
    rows = sorted({r.row for p in pairs for r in (p.a, p.b)})
    index = {row: i for i, row in enumerate(rows)}
    sums: dict[tuple[int, int], list[float]] = {}
    for p in pairs:
        i, j = index[p.a.row], index[p.b.row]
        sums.setdefault((min(i, j), max(i, j)), []).append(p.value)
    matrix = [[math.nan] * len(rows) for _ in rows]
    for (i, j), values in sums.items():
        matrix[i][j] = matrix[j][i] = math.fsum(values) / len(values)
    grouped = len({r.setup for r in rows}) > 1
    labels = [_label(r, grouped) for r in rows]
    fig = new_figure(height=1.5 + 0.2 * len(rows))
    ax = fig.axes[0]
    heatmap(ax, matrix, labels, labels, "CKA", triangle=True)
    ax.set_xlabel("objective")
    ax.set_ylabel("objective")
    ax.set_title(f"CKA at {layer}, mean over pairs of runs")
    return fig


def _layer_curves(pairs: list[CkaPair]) -> Figure:
    """Mean CKA per layer, same objective (other seeds) vs different objectives; the band
    spans the minimum to the maximum over pairs."""
    layers = list(dict.fromkeys(p.layer for p in pairs))
    fig = new_figure(height=2.5)
    ax = fig.axes[0]
    low = 1.0
    for name, same, colour in (
        ("same objective", True, "C0"),
        ("different objectives", False, "C3"),
    ):
        xs, means, los, his = [], [], [], []
        for i, layer in enumerate(layers):
            values = [p.value for p in pairs if p.layer == layer and (p.a.row == p.b.row) == same]
            if values:
                xs.append(i)
                means.append(math.fsum(values) / len(values))
                los.append(min(values))
                his.append(max(values))
        if xs:
            ax.plot(xs, means, "o-", ms=3, color=colour, label=f"{name} (mean)", clip_on=False)
            ax.fill_between(xs, los, his, color=colour, alpha=0.2, linewidth=0)
            low = min(low, *los)
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_xlabel("layer")
    ax.set_ylabel("CKA")
    ax.set_ylim(max(0.0, math.floor(low * 10) / 10 - 0.05), 1.0)
    ax.grid(alpha=0.25, linewidth=0.5)
    ax.legend(loc="lower left", frameon=False, title="band: min–max over pairs", title_fontsize=6)
    return fig


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)
