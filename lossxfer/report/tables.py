"""Tables from runs: one row per objective, mean ± std over seeds, best marks and t-tests.

A row is one (arch, training data, objective, options) averaged over seeds; rows that differ in
architecture or training data are kept apart in their own group, with the best value and the
t-test against the baseline computed inside each group, never across.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lossxfer.registry import Registry
from lossxfer.report.config import ReportConfig
from lossxfer.report.records import CkaPair, RowKey, RunData, RunKey
from lossxfer.report.stats import ALPHA, Cell, fmt_p, fmt_stat, pearson, ranks, welch_p

DAGGER = "†"
# separation statistics shown first, in this order; any other scalar statistic follows
SEPARATION_FIRST = ("r2", "d_within", "d_total", "nc1", "effective_dim", "sparsity", "dead_units")
STAT_TITLES = {"r2": "R²"}


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    unit: str  # "%" (fractions shown ×100, 1 decimal) or "" (3 decimals)
    best: bool = False  # mark the highest mean of its group
    test: bool = False  # Welch t-test against the baseline row of its group


@dataclass
class Row:
    group: str
    label: str
    n: int | None  # seeds (None where cells count pairs)
    cells: dict[str, Cell | None]
    key: RowKey | None = None


@dataclass
class Table:
    name: str
    title: str
    first: str  # heading of the label column
    columns: list[Column]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def grouped(self) -> bool:
        return len({r.group for r in self.rows}) > 1

    def to_dict(self) -> dict[str, Any]:
        """The table as data: fractions as stored, every cell's values and marks."""

        def cell(c: Cell | None) -> dict[str, Any] | None:
            if c is None:
                return None
            return {
                "mean": c.mean,
                "std": c.std,
                "n": c.n,
                "values": c.values,
                "p": c.p,
                "significant": c.significant,
                "best": c.best,
            }

        return {
            "name": self.name,
            "title": self.title,
            "columns": [dataclasses.asdict(c) for c in self.columns],
            "rows": [
                {
                    "group": r.group,
                    "label": r.label,
                    **(
                        {
                            "arch": r.key.arch,
                            "source": r.key.source,
                            "objective": r.key.objective,
                            "options": {k: json.loads(v) for k, v in r.key.options},
                        }
                        if r.key
                        else {}
                    ),
                    "n": r.n,
                    "cells": {k: cell(v) for k, v in r.cells.items()},
                }
                for r in self.rows
            ],
            "notes": self.notes,
            **self.extra,
        }


# -- building tables --------------------------------------------------------------------------

RowValues = Callable[[RowKey, list[RunData]], list[float]]
Builder = Callable[[list[RunData], list[CkaPair], ReportConfig], "Table | None"]
# every table `report --table` offers, in the order `all` shows them; each builder's docstring
# is its help
TABLES: Registry[Builder] = Registry("table")


def table_help(name: str) -> str:
    """A table's help: its builder's docstring as one line."""
    return " ".join((TABLES.get(name).__doc__ or "").split()).rstrip(".")


def _per_run(get: Callable[[RunData], float | None]) -> RowValues:
    return lambda _row, runs: [v for r in runs if (v := get(r)) is not None]


def _rows_by_group(runs: Iterable[RunData]) -> dict[RowKey, list[RunData]]:
    rows: dict[RowKey, list[RunData]] = defaultdict(list)
    for run in runs:
        rows[run.key.row].append(run)
    return dict(sorted(rows.items()))


def _objective_rows(
    rows: dict[RowKey, list[RunData]],
    columns: list[tuple[Column, RowValues]],
    baseline: str,
    suffix: str = "",
) -> list[Row]:
    """One row per objective; t-test against the baseline row and best marks inside each group."""
    out = [
        Row(
            key.setup + suffix,
            key.label,
            len({(r.key.seed, r.key.checkpoint) for r in runs}),
            {c.key: Cell(v) if (v := get(key, runs)) else None for c, get in columns},
            key,
        )
        for key, runs in rows.items()
    ]
    for name in dict.fromkeys(r.group for r in out):
        members = [r for r in out if r.group == name]
        base = next((r for r in members if r.label == baseline), None)
        for column, _ in columns:
            cells = [c for r in members if (c := r.cells[column.key]) is not None]
            if column.best and cells:
                # compare what is shown, so that values printed alike are marked alike
                top = max(float(shown(c.mean, column.unit)) for c in cells)
                for c in cells:
                    c.best = float(shown(c.mean, column.unit)) == top
            ref = base.cells[column.key] if base else None
            if not column.test or ref is None or ref.n < 2:
                continue
            for r in members:
                cell = r.cells[column.key]
                if r is not base and cell is not None and cell.n >= 2:
                    cell.p = welch_p(cell, ref)
    return [r for r in out if any(c is not None for c in r.cells.values())]


def shown(value: float, unit: str) -> str:
    return f"{value * 100:.1f}" if unit == "%" else f"{value:.3f}"


def _datasets(runs: Iterable[RunData], what: str) -> list[str]:
    return sorted({ds for r in runs for ds in r.by_dataset.get(what, {})})


def _at(what: str, dataset: str) -> RowValues:
    return _per_run(lambda r: r.get(what, dataset))


def _average(what: str, runs: list[RunData]) -> Callable[[RunData], float | None]:
    """A run's mean over the datasets measured in its group, its own source data excluded.

    None unless the run has every one of them: a partial average would not compare.
    """
    sets: dict[str, set[str]] = defaultdict(set)
    for r in runs:
        sets[r.key.row.setup].update(r.by_dataset.get(what, {}))

    def get(run: RunData) -> float | None:
        values = run.by_dataset.get(what, {})
        datasets = sets[run.key.row.setup] - {run.key.row.source}
        if not datasets or not datasets <= values.keys():
            return None
        return math.fsum(values[ds] for ds in datasets) / len(datasets)

    return get


def _notes(config: ReportConfig, rows: list[Row], what: str, best: bool = True) -> list[str]:
    bold = " Bold: best in column." if best else ""
    if any(r.label == config.baseline for r in rows):
        tested = f"{DAGGER} p < {ALPHA:g}, Welch's t-test against {config.baseline}."
    else:
        tested = f"No {config.baseline} row, so no t-test."
    return [f"{what} Mean ± sample std over n seeds (one seed: the value alone).", tested + bold]


@dataclass(frozen=True)
class RunPoint:
    """One run's summary numbers: what the scatter plots and correlations are made of."""

    run: RunKey
    source: float | None
    linear: float | None  # mean over the transfer datasets of its group
    knn: float | None
    r2: float | None  # on the source data where measured there, else on the one dataset


def run_points(runs: list[RunData]) -> list[RunPoint]:
    out = []
    for setup in _setups(runs):
        here = [r for r in runs if r.key.row.setup == setup]
        linear, knn = _average("linear", here), _average("knn", here)
        separation = _datasets(here, "sep:r2")
        for r in here:
            r2 = r.get("sep:r2", r.key.row.source)
            if r2 is None and len(separation) == 1:
                r2 = r.get("sep:r2", separation[0])
            out.append(RunPoint(r.key, r.source, linear(r), knn(r), r2))
    return out


def correlation(points: list[RunPoint], x: str, y: str) -> dict[str, Any] | None:
    """Pearson and Spearman correlation over runs having both numbers (None under 3 runs)."""
    pairs = [
        (a, b)
        for p in points
        if (a := getattr(p, x)) is not None and (b := getattr(p, y)) is not None
    ]
    if len(pairs) < 3:
        return None
    xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
    (r, p), (rho, p_rho) = pearson(xs, ys), pearson(ranks(xs), ranks(ys))
    return {
        "x": x,
        "y": y,
        "runs": len(pairs),
        "pearson_r": r,
        "pearson_p": p,
        "spearman_rho": rho,
        "spearman_p": p_rho,
    }


def describe_correlation(corr: dict[str, Any]) -> str:
    return (
        f"Pearson r = {fmt_stat(corr['pearson_r'])} (p = {fmt_p(corr['pearson_p'])}), "
        f"Spearman ρ = {fmt_stat(corr['spearman_rho'])} (p = {fmt_p(corr['spearman_p'])})"
    )


def _cka_with(config: ReportConfig, cka: list[CkaPair]) -> RowValues:
    """Pairs of one row's runs with the baseline's runs (other seeds, for the baseline row)."""

    def values(row: RowKey, _runs: list[RunData]) -> list[float]:
        return [
            p.value
            for p in cka
            if p.layer == config.layer
            and p.a.row.setup == p.b.row.setup == row.setup
            and {p.a.row.label, p.b.row.label} == {row.label, config.baseline}
        ]

    return values


@TABLES.register("summary")
def _summary_table(runs: list[RunData], cka: list[CkaPair], config: ReportConfig) -> Table | None:
    """The study's compact table: source accuracy, linear and kNN transfer averaged over the
    transfer datasets, R² and CKA with the baseline at --layer, with the correlation of R² and
    transfer over runs beneath."""
    points = {p.run: p for p in run_points(runs)}

    def column(key: str, title: str, unit: str) -> tuple[Column, RowValues]:
        get = _per_run(lambda r: getattr(points[r.key], key))
        return Column(key, title, unit, unit == "%", True), get

    columns = [
        column("source", "Source", "%"),
        column("linear", "Linear transfer", "%"),
        column("knn", "kNN transfer", "%"),
        column("r2", "R²", ""),
        (Column(f"cka:{config.baseline}", f"CKA vs {config.baseline}", ""), _cka_with(config, cka)),
    ]
    rows = _objective_rows(_rows_by_group(runs), columns, config.baseline)
    if not rows:
        return None
    used = [c for c, _ in columns if any(r.cells[c.key] for r in rows)]
    for row in rows:
        row.cells = {c.key: row.cells[c.key] for c in used}
    notes = _notes(config, rows, "Accuracy (%); transfer averaged over the transfer datasets.")
    if any(c.key.startswith("cka:") for c in used):
        notes.append(
            f"CKA at layer {config.layer}: mean over pairs with {config.baseline} runs "
            f"({config.baseline} row: pairs of its own seeds)."
        )
    correlations = []
    setups = _setups(runs)
    for setup in setups:
        corr = correlation([p for p in points.values() if p.run.row.setup == setup], "r2", "linear")
        if corr is not None:
            correlations.append({"group": setup, **corr})
            where = f" ({setup})" if len(setups) > 1 else ""
            runs_n = corr["runs"]
            notes.append(
                f"R² vs linear transfer{where}, {runs_n} runs: {describe_correlation(corr)}."
            )
    title = f"Summary: source and transfer accuracy, class separation, CKA (layer {config.layer})"
    return Table("summary", title, "Objective", used, rows, notes, {"correlations": correlations})


@TABLES.register("transfer")
def _transfer_table(runs: list[RunData], _cka: list[CkaPair], config: ReportConfig) -> Table | None:
    """Source accuracy and probe accuracy per transfer dataset, and their average."""
    columns: list[tuple[Column, RowValues]] = [
        (Column("source", "Source", "%", True, True), _per_run(lambda r: r.source))
    ]
    for method, title in (("linear", "Linear"), ("knn", "kNN")):
        datasets = _datasets(runs, method)
        for ds in datasets:
            column = Column(f"{method}:{ds}", f"{title} {ds}", "%", True, True)
            columns.append((column, _at(method, ds)))
        if len(datasets) > 1:
            column = Column(f"{method}:mean", f"{title} avg", "%", True, True)
            columns.append((column, _per_run(_average(method, runs))))
    if len(columns) == 1 and all(r.source is None for r in runs):
        return None
    rows = _objective_rows(_rows_by_group(runs), columns, config.baseline)
    what = "Top-1 accuracy (%) of probes on fixed features; avg: over the transfer datasets."
    notes = _notes(config, rows, what)
    title = f"Transfer: accuracy (%), features at layer {config.layer}"
    return Table("transfer", title, "Objective", [c for c, _ in columns], rows, notes)


def _setups(runs: Iterable[RunData]) -> list[str]:
    return sorted({r.key.row.setup for r in runs})


@TABLES.register("separation")
def _separation_table(
    runs: list[RunData], _cka: list[CkaPair], config: ReportConfig
) -> Table | None:
    """Class separation R² and the other representation statistics at --layer."""
    datasets = _datasets(runs, "sep:r2")
    if not datasets:
        return None
    names = {m.removeprefix("sep:") for r in runs for m in r.by_dataset if m.startswith("sep:")}
    # The representation statistics; counts (rows, classes, dim, zero_rows) are bookkeeping.
    order = [s for s in SEPARATION_FIRST if s in names]
    cols = [Column(s, STAT_TITLES.get(s, s), "", False, True) for s in order]
    rows: list[Row] = []
    for ds in datasets:
        have = [r for r in runs if r.get("sep:r2", ds) is not None]
        columns = [(c, _at(f"sep:{c.key}", ds)) for c in cols]
        suffix = f", on {ds}" if len(datasets) > 1 else ""
        rows += _objective_rows(_rows_by_group(have), columns, config.baseline, suffix)
    notes = _notes(config, rows, "Class separation of L2-normalised features.", best=False)
    title = f"Class separation at layer {config.layer}"
    return Table("separation", title, "Objective", cols, rows, notes)


@TABLES.register("finetune")
def _finetune_table(runs: list[RunData], _cka: list[CkaPair], config: ReportConfig) -> Table | None:
    """Accuracy after fine-tuning the whole network, per dataset."""
    datasets = _datasets(runs, "finetune")
    if not datasets:
        return None
    columns: list[tuple[Column, RowValues]] = [
        (Column(ds, ds, "%", True, True), _at("finetune", ds)) for ds in datasets
    ]
    if len(datasets) > 1:
        average = _per_run(_average("finetune", runs))
        columns.append((Column("mean", "avg", "%", True, True), average))
    have = [r for r in runs if "finetune" in r.by_dataset]
    rows = _objective_rows(_rows_by_group(have), columns, config.baseline)
    notes = _notes(config, rows, "Top-1 accuracy (%) after fine-tuning the whole network.")
    return Table(
        "finetune", "Fine-tuning: accuracy (%)", "Objective", [c for c, _ in columns], rows, notes
    )


@TABLES.register("cka")
def _cka_table(_runs: list[RunData], cka: list[CkaPair], config: ReportConfig) -> Table | None:
    """Per layer, CKA between seeds of one objective and between different objectives."""
    pairs = [p for p in cka if p.a.row.setup == p.b.row.setup]
    if not pairs:
        return None
    layers = list(dict.fromkeys(p.layer for p in pairs))
    columns = [
        Column("same", "Same objective", ""),
        Column("different", "Different objectives", ""),
    ]
    rows = []
    for setup in sorted({p.a.row.setup for p in pairs}):
        for layer in layers:
            here = [p for p in pairs if p.layer == layer and p.a.row.setup == setup]
            same = [p.value for p in here if p.a.row == p.b.row]
            diff = [p.value for p in here if p.a.row != p.b.row]
            if here:
                cells = {
                    "same": Cell(same) if same else None,
                    "different": Cell(diff) if diff else None,
                }
                rows.append(Row(f"{setup}, {pairs[0].estimator} CKA", layer, None, cells))
    notes = [
        "Mean ± sample std over pairs of runs (n pairs): same objective = different seeds of one "
        "objective with the same options; different = runs of different objectives or options.",
        f"Estimator: {pairs[0].estimator}.",
    ]
    return Table("cka", "CKA between networks, layer by layer", "Layer", columns, rows, notes)
