"""The registered tables: one row per objective, mean ± std over seeds, best marks and t-tests.

A row is one (arch, training data, objective, options, training settings) averaged over seeds;
rows that differ in architecture or training data are kept apart in their own group, with the
best value and the t-test against the baseline computed inside each group, never across.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from lossxfer.registry import Registry
from lossxfer.report.config import DEFAULT_LAYER, ReportConfig
from lossxfer.report.records import CkaPair, Gathered, RowKey, RunData, RunKey
from lossxfer.report.stats import ALPHA, Cell, fmt_p, fmt_stat, pearson, ranks, welch_p
from lossxfer.report.table import DAGGER, Column, Row, Table

RowValues = Callable[[RowKey, list[RunData]], list[float]]
Builder = Callable[[Gathered, ReportConfig], Table | None]
# every table `report --table` offers, in the order `all` shows them; each builder's docstring
# is its help
TABLES: Registry[Builder] = Registry("table")

# the representation statistics of `separation` records, in table order (the counts rows,
# classes, dim and zero_rows are bookkeeping): key → (heading, unit, decimals)
STATISTICS = {
    "r2": ("R²", "", 3),
    "d_within": ("d̄ within", "", 3),
    "d_total": ("d̄ total", "", 3),
    "nc1": ("NC1", "", 3),
    "effective_dim": ("Eff. dim.", "", 1),
    "sparsity": ("Sparsity", "%", 1),
    "dead_units": ("Dead units", "", 1),
}


def table_help(name: str) -> str:
    """A table's help: its builder's docstring as one line."""
    return " ".join((TABLES.get(name).__doc__ or "").split()).rstrip(".")


def _accuracy(key: str, title: str, metric: str, dataset: str = "") -> Column:
    return Column(key, title, "%", 1, best=True, test=True, metric=metric, dataset=dataset)


@TABLES.register("summary")
def _summary_table(found: Gathered, config: ReportConfig) -> Table | None:
    """The study's compact table: source accuracy, linear and kNN transfer averaged over the
    transfer datasets, R² and CKA with the baseline at --layer, with the correlation of R² and
    transfer over runs beneath."""
    runs = found.runs
    points = {p.run: p for p in run_points(runs)}

    def per_point(key: str) -> RowValues:
        return _per_run(lambda r: getattr(points[r.key], key))

    columns = [
        (_accuracy("source", "Source", "source_top1"), per_point("source")),
        (_accuracy("linear", "Linear transfer", "linear_top1", "mean"), per_point("linear")),
        (_accuracy("knn", "kNN transfer", "knn_top1", "mean"), per_point("knn")),
        (Column("r2", "R²", test=True, metric="r2"), per_point("r2")),
    ]
    if config.baseline:
        cka = Column("cka", f"CKA with {config.baseline}", metric="cka")
        columns.append(
            (cka, _cka_with(config.baseline, _at_layer(found, config.layer or DEFAULT_LAYER)))
        )
    rows = _objective_rows(_rows_by_group(runs), columns, config.baseline)
    if not rows:
        return None
    used = [c for c, _ in columns if any(r.cells[c.key] for r in rows)]
    for row in rows:
        row.cells = {c.key: row.cells[c.key] for c in used}
    what = "Top-1 accuracy (%) on the source test set and of probes at layer "
    what += f"{config.layer}, averaged over the transfer datasets; R² on the source data."
    notes = _notes(config, rows, what, used)
    if any(c.key == "cka" for c in used):
        notes.append(
            f"CKA at layer {config.layer}: mean over pairs of a row's runs with "
            f"{config.baseline}'s (for {config.baseline}: pairs of its own seeds)."
        )
    correlations = []
    setups = _setups(runs)
    for setup in setups:
        corr = correlation([p for p in points.values() if p.run.row.setup == setup], "r2", "linear")
        if corr is not None:
            correlations.append({"group": setup, **corr})
            where = f" ({setup})" if len(setups) > 1 else ""
            notes.append(
                f"R² vs linear transfer over {corr['runs']} runs{where}: "
                f"{describe_correlation(corr)}."
            )
    title = f"Source accuracy, transfer accuracy, class separation and CKA (layer {config.layer})"
    return Table("summary", title, "Objective", used, rows, notes, {"correlations": correlations})


@TABLES.register("transfer")
def _transfer_table(found: Gathered, config: ReportConfig) -> Table | None:
    """Source accuracy and probe accuracy per transfer dataset, and their average."""
    runs = found.runs
    columns = [(_accuracy("source", "Source", "source_top1"), _per_run(lambda r: r.source))]
    for method, title in (("linear", "Linear"), ("knn", "kNN")):
        datasets = _datasets(runs, method)
        for ds in datasets:
            column = _accuracy(f"{method}:{ds}", f"{title}, {ds}", f"{method}_top1", ds)
            columns.append((column, _at(method, ds)))
        if len(datasets) > 1:
            column = _accuracy(f"{method}:mean", f"{title}, mean", f"{method}_top1", "mean")
            columns.append((column, _per_run(_average(method, runs))))
    if len(columns) == 1 and all(r.source is None for r in runs):
        return None
    rows = _objective_rows(_rows_by_group(runs), columns, config.baseline)
    what = (
        "Top-1 accuracy (%) on the source test set and of probes on fixed features at layer "
        f"{config.layer}"
        + (
            "; mean: over the transfer datasets."
            if any(c.dataset == "mean" for c, _ in columns)
            else "."
        )
    )
    notes = _notes(config, rows, what, [c for c, _ in columns])
    title = f"Transfer accuracy of fixed features (layer {config.layer})"
    return Table("transfer", title, "Objective", [c for c, _ in columns], rows, notes)


@TABLES.register("separation")
def _separation_table(found: Gathered, config: ReportConfig) -> Table | None:
    """Class separation R² and the other representation statistics at --layer."""
    runs = found.runs
    datasets = _datasets(runs, "sep:r2")
    if not datasets:
        return None
    names = {m.removeprefix("sep:") for r in runs for m in r.by_dataset if m.startswith("sep:")}
    cols = [
        Column(s, title, unit, digits, test=True, metric=s, count=s == "dead_units")
        for s, (title, unit, digits) in STATISTICS.items()
        if s in names
    ]
    rows: list[Row] = []
    for ds in datasets:
        have = [r for r in runs if r.get("sep:r2", ds) is not None]
        columns = [(c, _at(f"sep:{c.key}", ds)) for c in cols]
        suffix = f", on {ds}" if len(datasets) > 1 else ""
        rows += _objective_rows(_rows_by_group(have), columns, config.baseline, suffix, ds)
    what = (
        "Class separation of L2-normalised features: R² = 1 − d̄ within / d̄ total (mean cosine "
        "distances); NC1: within- over between-class variability; Eff. dim.: participation "
        "ratio; Sparsity: zero activations (%); Dead units: never active."
    )
    notes = _notes(config, rows, what, cols)
    title = f"Class separation and representation statistics (layer {config.layer})"
    return Table("separation", title, "Objective", cols, rows, notes)


@TABLES.register("finetune")
def _finetune_table(found: Gathered, config: ReportConfig) -> Table | None:
    """Accuracy after fine-tuning the whole network, per dataset."""
    runs = found.runs
    datasets = _datasets(runs, "finetune")
    if not datasets:
        return None
    columns = [
        (_accuracy(f"finetune:{ds}", ds, "finetune_top1", ds), _at("finetune", ds))
        for ds in datasets
    ]
    if len(datasets) > 1:
        average = _per_run(_average("finetune", runs))
        columns.append((_accuracy("finetune:mean", "Mean", "finetune_top1", "mean"), average))
    have = [r for r in runs if "finetune" in r.by_dataset]
    rows = _objective_rows(_rows_by_group(have), columns, config.baseline)
    what = "Top-1 test accuracy (%) after fine-tuning the whole network"
    what += "; mean: over the datasets." if len(datasets) > 1 else "."
    notes = _notes(config, rows, what, [c for c, _ in columns])
    title = "Fine-tuning accuracy"
    return Table("finetune", title, "Objective", [c for c, _ in columns], rows, notes)


@TABLES.register("cka")
def _cka_table(found: Gathered, config: ReportConfig) -> Table | None:
    """Per layer, CKA between seeds of one objective and between different objectives."""
    pairs = [p for p in found.cka if p.a.row.setup == p.b.row.setup]
    pairs = [p for p in pairs if p.layer not in found.same_layers]
    if not pairs:
        return None
    layers = list(dict.fromkeys(p.layer for p in pairs))
    estimator = pairs[0].estimator
    columns = [
        Column("same", "Same objective", metric="cka_same_objective"),
        Column("different", "Different objectives", metric="cka_different_objectives"),
    ]
    rows = []
    for setup in sorted({p.a.row.setup for p in pairs}):
        arch, _, data = setup.partition(" on ")
        for layer in layers:
            here = [p for p in pairs if p.layer == layer and p.a.row.setup == setup]
            same = [p.value for p in here if p.a.row == p.b.row]
            diff = [p.value for p in here if p.a.row != p.b.row]
            if here:
                cells = {
                    "same": Cell(same) if same else None,
                    "different": Cell(diff) if diff else None,
                }
                fields = {"arch": arch, "data": data, "estimator": estimator, "layer": layer}
                rows.append(Row(f"{setup}, {estimator} CKA", layer, None, cells, fields))
    notes = [
        f"{estimator.capitalize()} CKA. Mean ± sample standard deviation over n pairs of runs "
        "(shown as (n=…)): same objective = different seeds of one objective and options; "
        "different = runs of different objectives or options."
    ]
    notes += [
        f"{a} is not shown: the same activations as {b} (its global-average-pooled output)."
        for a, b in found.same_layers.items()
        if any(p.layer == b for p in pairs)
    ]
    return Table("cka", "CKA between networks, layer by layer", "Layer", columns, rows, notes)


# -- rows -------------------------------------------------------------------------------------


def _per_run(get: Callable[[RunData], float | None]) -> RowValues:
    return lambda _row, runs: [v for r in runs if (v := get(r)) is not None]


def _rows_by_group(runs: Iterable[RunData]) -> dict[RowKey, list[RunData]]:
    rows: dict[RowKey, list[RunData]] = defaultdict(list)
    for run in runs:
        rows[run.key.row].append(run)
    return dict(sorted(rows.items()))


def _fields(key: RowKey) -> dict[str, str]:
    return {
        "arch": key.arch,
        "data": key.source,
        "objective": key.objective,
        "options": key.options_text,
        "training": key.training_text,
    }


def _objective_rows(
    rows: dict[RowKey, list[RunData]],
    columns: list[tuple[Column, RowValues]],
    baseline: str | None,
    suffix: str = "",
    dataset: str = "",
) -> list[Row]:
    """One row per objective; t-test against the baseline row and best marks inside each group."""
    out = [
        Row(
            key.setup + suffix,
            key.label,
            len({(r.key.seed, r.key.checkpoint) for r in runs}),
            {c.key: Cell(v) if (v := get(key, runs)) else None for c, get in columns},
            {**_fields(key), **({"dataset": dataset} if dataset else {})},
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
                top = max(float(column.shown(c.mean)) for c in cells)
                for c in cells:
                    c.best = float(column.shown(c.mean)) == top
            ref = base.cells[column.key] if base else None
            if not column.test or ref is None or ref.n < 2:
                continue
            for r in members:
                cell = r.cells[column.key]
                if r is not base and cell is not None and cell.n >= 2:
                    cell.p = welch_p(cell, ref)
    return [r for r in out if any(c is not None for c in r.cells.values())]


def _notes(config: ReportConfig, rows: list[Row], what: str, columns: list[Column]) -> list[str]:
    """The caption's statistics: what ± is, n, which test against which row, what bold means."""
    stats = "Mean ± sample standard deviation over the n seeds of each row"
    if any(c is not None and c.n != r.n for r in rows for c in r.cells.values()):
        stats += " ((n=…): a cell with fewer runs)"
    stats += "; n = 1: the value alone, no test."
    if not config.baseline or not any(r.label == config.baseline for r in rows):
        tested = f"No {config.baseline or 'baseline'} row, so no t-test."
    elif any(c is not None and c.p is not None for r in rows for c in r.cells.values()):
        tested = (
            f"{DAGGER} p < {ALPHA:g}, two-sided Welch's t-test against {config.baseline} "
            "(within a group; n ≥ 2 in both)."
        )
    else:
        tested = f"No t-test against {config.baseline}: it needs n ≥ 2 in both rows."
    out = [what, stats, tested]
    if any(c.best for c in columns):
        out.append("Bold: best in column (of its group).")
    return out


def _setups(runs: Iterable[RunData]) -> list[str]:
    return sorted({r.key.row.setup for r in runs})


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


def _at_layer(found: Gathered, layer: str) -> list[CkaPair]:
    """CKA pairs at `layer`."""
    return [p for p in found.cka if p.layer == layer]


def _cka_with(baseline: str, pairs: list[CkaPair]) -> RowValues:
    """Pairs of one row's runs with the baseline's runs (other seeds, for the baseline row)."""

    def values(row: RowKey, _runs: list[RunData]) -> list[float]:
        return [
            p.value
            for p in pairs
            if p.a.row.setup == p.b.row.setup == row.setup
            and {p.a.row.label, p.b.row.label} == {row.label, baseline}
        ]

    return values


# -- runs as points: the scatter plots and correlations ---------------------------------------


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
