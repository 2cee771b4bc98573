"""`report`: paper-style tables (and plots) from result records alone (DESIGN.md §2–3).

Records are joined into runs by model provenance (arch, objective, options, seed, training data,
checkpoint sha256). A table row is one (arch, training data, objective, options) averaged over
seeds; rows that differ in architecture or training data are kept apart in their own group, with
the best value and the t-test against the baseline computed inside each group, never across.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossxfer.errors import InputError, UsageError
from lossxfer.results import Result, load_result

TABLES = ("summary", "transfer", "separation", "finetune", "cka")
FORMATS = ("rich", "markdown", "csv", "tsv", "latex", "json")
REPORT_FORMAT = "lossxfer.report/1"
ALPHA = 0.05
DAGGER = "†"
SUFFIX_FORMATS = {".md": "markdown", ".csv": "csv", ".tsv": "tsv", ".tex": "latex", ".json": "json"}
# separation statistics shown first, in this order; any other scalar statistic follows
SEPARATION_FIRST = ("r2", "d_within", "d_total", "nc1", "effective_dim", "sparsity", "dead_units")
STAT_TITLES = {"r2": "R²"}


@dataclass(frozen=True)
class ReportConfig:
    paths: tuple[Path, ...]
    tables: tuple[str, ...] = TABLES
    baseline: str = "softmax"
    layer: str = "penultimate"
    cka_estimator: str | None = None
    plots: Path | None = None
    force: bool = False


# -- runs -------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class RowKey:
    """What a row averages over seeds: everything of a run's provenance except the seed."""

    arch: str
    source: str
    order: int  # position of the objective in the registry (paper order); unknown names last
    objective: str
    options: tuple[tuple[str, str], ...]  # non-default options: (name, canonical JSON value)

    @property
    def label(self) -> str:
        opts = ", ".join(f"{k}={_unquote(v)}" for k, v in self.options)
        return f"{self.objective} ({opts})" if opts else self.objective

    @property
    def setup(self) -> str:
        return f"{self.arch} on {self.source}"


def _unquote(text: str) -> str:
    value = json.loads(text)
    return value if isinstance(value, str) else text


@dataclass(frozen=True)
class RunKey:
    row: RowKey
    seed: int
    checkpoint: str | None  # only set when one seed has several checkpoints


@dataclass
class RunData:
    """Every number the records give for one trained network."""

    key: RunKey
    source: float | None = None
    # metric ("linear", "knn", "finetune", "sep:r2", ...) → dataset label → value
    by_dataset: dict[str, dict[str, float]] = field(default_factory=dict)

    def get(self, metric: str, dataset: str) -> float | None:
        return self.by_dataset.get(metric, {}).get(dataset)


@dataclass(frozen=True)
class CkaPair:
    a: RunKey
    b: RunKey
    estimator: str
    layer: str
    value: float


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


class _Skip(Exception):
    """A record that cannot be used, with the reason shown to the user."""


@dataclass
class _Measure:
    path: str
    created: str
    kind: str
    base: tuple[RowKey, int]
    checkpoint: str | None
    values: dict[tuple[str, ...], float]  # (what, dataset, ...) → value
    other: tuple[tuple[RowKey, int], str | None] | None = None  # cka: the second model


# -- tables -----------------------------------------------------------------------------------


@dataclass
class Cell:
    """Values over seeds (or over pairs of runs, for CKA) and their comparison marks."""

    values: list[float]
    p: float | None = None
    best: bool = False

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / len(self.values)

    @property
    def std(self) -> float | None:
        """Sample std (ddof=1); None with one value."""
        if len(self.values) < 2:
            return None
        m = self.mean
        return math.sqrt(math.fsum((v - m) ** 2 for v in self.values) / (len(self.values) - 1))

    @property
    def significant(self) -> bool:
        return self.p is not None and self.p < ALPHA


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


@dataclass
class Report:
    config: ReportConfig
    tables: list[Table]
    runs: list[RunData]
    cka: list[CkaPair]
    skipped: list[Skipped]
    warnings: list[str]
    plots: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The tables as data (fractions as stored, not percentages)."""
        return {
            "format": REPORT_FORMAT,
            "baseline": self.config.baseline,
            "layer": self.config.layer,
            "values": "as stored: accuracies are fractions; unit '%' is how tables show them",
            "tables": [_table_dict(t) for t in self.tables],
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
            "warnings": self.warnings,
            "plots": [str(p) for p in self.plots],
        }


class NothingToReport(InputError):
    """No usable record (exit 3); carries the skipped list so the CLI can show it."""

    def __init__(self, message: str, skipped: list[Skipped]) -> None:
        super().__init__(message)
        self.skipped = skipped


def format_for(out: Path | None) -> str:
    """Output format implied by an -o file name (rich when there is none or it says nothing)."""
    return SUFFIX_FORMATS.get(out.suffix.lower(), "rich") if out else "rich"


def run_report(config: ReportConfig) -> Report:
    """Gather records, build the requested tables, and draw plots if asked."""
    for name in config.tables:
        if name not in TABLES:
            raise UsageError(f"--table {name}: choose from {', '.join(TABLES)}, all")
    files, skipped = _find_files(config.paths)
    measures: list[_Measure] = []
    for path in files:
        try:
            measures.extend(_read(path, config.layer))
        except _Skip as exc:
            skipped.append(Skipped(str(path), str(exc)))
    warnings: list[str] = []
    runs, cka = _join(measures, config, skipped, warnings)
    tables = [t for t in (_build(n, runs, cka, config) for n in config.tables) if t is not None]
    if not tables:
        wanted = ", ".join(config.tables)
        raise NothingToReport(
            f"no usable result records for table {wanted} among {len(files)} file(s)"
            f" ({len(skipped)} skipped)",
            skipped,
        )
    report = Report(config, tables, list(runs.values()), cka, skipped, warnings)
    if config.plots is not None:
        from lossxfer.plots import write_plots

        report.plots = write_plots(report, config.plots, config.force)
        if not report.plots:
            warnings.append("no plots: they need probe with separation or train records, or CKA")
    return report


# -- reading ----------------------------------------------------------------------------------


def _find_files(paths: Iterable[Path]) -> tuple[list[Path], list[Skipped]]:
    """Files as given, and every *.json below a directory (sorted, hidden names ignored)."""
    files: list[Path] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*.json")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.exists():
            found = [path]
        else:
            skipped.append(Skipped(str(path), "no such file or directory"))
            continue
        for p in found:
            real = p.resolve()
            if real not in seen:
                seen.add(real)
                files.append(p)
    return files, skipped


def _read(path: Path, layer: str) -> list[_Measure]:
    try:
        result = load_result(path)
    except InputError as exc:
        message = str(exc)
        raise _Skip(message.removeprefix(f"{path}: ")) from None
    if result.kind == "extract":
        return []
    base, checkpoint = _provenance(result.model, "model")
    created = str(result.created)
    metrics = result.metrics
    values: dict[tuple[str, ...], float] = {}
    other = None
    if result.kind == "train":
        values[("source",)] = _number(metrics, "test_top1", "metrics.test_top1")
    elif result.kind == "finetune":
        values[("finetune", _dataset(result))] = _number(metrics, "test_top1", "metrics.test_top1")
    elif result.kind == "probe":
        ds = _dataset(result)
        methods = _layer(metrics, layer)
        for method in ("linear", "knn"):
            if (
                isinstance(methods.get(method), dict)
                and methods[method].get("test_top1") is not None
            ):
                where = f"metrics.layers.{layer}.{method}.test_top1"
                values[(method, ds)] = _number(methods[method], "test_top1", where)
        if not values:
            raise _Skip(f"no linear or knn test_top1 at layer {layer!r}")
    elif result.kind == "separation":
        ds = _dataset(result)
        stats = _layer(metrics, layer)
        _number(stats, "r2", f"metrics.layers.{layer}.r2")
        for stat, value in stats.items():
            if _finite(value):
                values[(f"sep:{stat}", ds)] = float(value)
    else:  # cka
        other = _provenance(metrics.get("model_b", result.model), "metrics.model_b")
        estimator = str(metrics.get("estimator", "linear"))
        for name, value in _cka_diagonal(metrics).items():
            values[("cka", estimator, name)] = value
        if not values:
            raise _Skip("no layer appears in both metrics.layers_a and metrics.layers_b")
    return [_Measure(str(path), created, result.kind, base, checkpoint, values, other)]


def _provenance(model: Any, where: str) -> tuple[tuple[RowKey, int], str | None]:
    if not isinstance(model, dict):
        raise _Skip(f"missing field {where!r}")
    for name in ("arch", "objective", "seed", "data"):
        if model.get(name) is None:
            raise _Skip(f"missing field '{where}.{name}'")
    seed = model["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _Skip(f"field '{where}.seed' is not an integer")
    data = model["data"]
    source = data.get("label") or data.get("spec") if isinstance(data, dict) else data
    if not source:
        raise _Skip(f"missing field '{where}.data.label'")
    opts = model.get("objective_opts") or {}
    if not isinstance(opts, dict):
        raise _Skip(f"field '{where}.objective_opts' is not an object")
    objective = str(model["objective"])
    order, defaults = _objective_info(objective)
    shown = tuple(
        (str(k), _canon(v))
        for k, v in sorted(opts.items())
        if k not in defaults or defaults[k] != v
    )
    row = RowKey(str(model["arch"]), str(source), order, objective, shown)
    checkpoint = model.get("checkpoint_sha256")
    return (row, seed), str(checkpoint) if checkpoint else None


def _objective_info(name: str) -> tuple[int, dict[str, Any]]:
    """Paper order and default options of a registered objective; unknown names sort last."""
    from lossxfer.objectives import OBJECTIVES

    names = OBJECTIVES.names()
    if name not in names:
        return len(names), {}
    try:
        defaults = OBJECTIVES.get(name)().options()
    except (TypeError, ValueError):
        defaults = {}
    return names.index(name), defaults


def _canon(value: Any) -> str:
    """An option value as canonical JSON, so that 1 and 1.0 name the same configuration."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return json.dumps(float(value))
    return json.dumps(value, sort_keys=True)


def _number(data: dict[str, Any], key: str, where: str) -> float:
    value = data.get(key)
    if value is None:
        raise _Skip(f"missing or null field {where!r}")
    if not _finite(value):
        raise _Skip(f"field {where!r} is not a finite number")
    return float(value)


def _finite(value: Any) -> bool:
    """A JSON number that is finite (Python's json also reads NaN and Infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _dataset(result: Result) -> str:
    ds = result.dataset
    label = ds.get("label") or ds.get("spec") if isinstance(ds, dict) else ds
    if not label or not isinstance(label, str):
        raise _Skip("missing field 'dataset.label'")
    return label


def _layer(metrics: dict[str, Any], layer: str) -> dict[str, Any]:
    layers = metrics.get("layers")
    if not isinstance(layers, dict):
        raise _Skip("missing field 'metrics.layers'")
    if not isinstance(layers.get(layer), dict):
        have = ", ".join(map(str, layers)) or "none"
        raise _Skip(f"no layer {layer!r} in metrics.layers (has: {have}); choose with --layer")
    return layers[layer]


def _cka_diagonal(metrics: dict[str, Any]) -> dict[str, float]:
    """CKA of each layer with the same-named layer of the other model, in layers_a order."""
    a, b, matrix = metrics.get("layers_a"), metrics.get("layers_b"), metrics.get("matrix")
    if not (isinstance(a, list) and isinstance(b, list) and isinstance(matrix, list)):
        raise _Skip("missing field 'metrics.layers_a', 'metrics.layers_b' or 'metrics.matrix'")
    if len(matrix) != len(a) or any(not isinstance(r, list) or len(r) != len(b) for r in matrix):
        raise _Skip("metrics.matrix is not len(layers_a) × len(layers_b)")
    out = {}
    for i, name in enumerate(a):
        if name in b:
            value = matrix[i][b.index(name)]
            if _finite(value):
                out[str(name)] = float(value)
    return out


# -- joining ----------------------------------------------------------------------------------


def _join(
    measures: list[_Measure], config: ReportConfig, skipped: list[Skipped], warnings: list[str]
) -> tuple[dict[RunKey, RunData], list[CkaPair]]:
    """Resolve records to runs; the newest record wins where two give the same number."""
    checkpoints: dict[tuple[RowKey, int], set[str]] = defaultdict(set)
    for m in measures:
        for base, ckpt in ((m.base, m.checkpoint), m.other or (None, None)):
            if base is not None and ckpt is not None:
                checkpoints[base].add(ckpt)
    for (row, seed), ckpts in sorted(checkpoints.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if len(ckpts) > 1:
            warnings.append(
                f"{row.setup}, {row.label} seed {seed}: {len(ckpts)} different checkpoints "
                "(different training settings?); counted as separate runs"
            )

    def resolve(base: tuple[RowKey, int], ckpt: str | None) -> RunKey:
        if len(checkpoints[base]) <= 1:
            return RunKey(base[0], base[1], None)
        if ckpt is None:
            raise _Skip(
                f"{base[0].label} seed {base[1]} has several checkpoints and this record "
                "names none (no model.checkpoint_sha256)"
            )
        return RunKey(base[0], base[1], ckpt[:12])

    estimators = sorted({k[1] for m in measures if m.kind == "cka" for k in m.values})
    estimator = config.cka_estimator or (
        "linear" if "linear" in estimators or not estimators else estimators[0]
    )
    latest: dict[tuple[RunKey, tuple[str, ...]], tuple[str, float]] = {}
    latest_cka: dict[tuple[RunKey, RunKey, str], tuple[str, float]] = {}
    for m in sorted(measures, key=lambda m: m.created):
        try:
            run = resolve(m.base, m.checkpoint)
            run_b = resolve(*m.other) if m.other else None
        except _Skip as exc:
            skipped.append(Skipped(m.path, str(exc)))
            continue
        if m.kind != "cka":
            for key, value in m.values.items():
                latest[(run, key)] = (m.path, value)
        elif run_b is None or run_b == run:
            skipped.append(Skipped(m.path, "CKA of a network with itself; nothing to compare"))
        elif all(key[1] == estimator for key in m.values):
            a, b = sorted((run, run_b), key=repr)
            for key, value in m.values.items():
                latest_cka[(a, b, key[2])] = (m.path, value)
        else:
            found = next(iter(m.values))[1]
            skipped.append(
                Skipped(m.path, f"CKA estimator {found!r}, not {estimator!r} (--cka-estimator)")
            )
    used = {path for path, _ in [*latest.values(), *latest_cka.values()]}
    used |= {s.path for s in skipped}
    for m in measures:
        if m.path not in used:
            skipped.append(Skipped(m.path, "superseded by newer records of the same measurement"))

    runs: dict[RunKey, RunData] = {}
    for (run, key), (_, value) in latest.items():
        data = runs.setdefault(run, RunData(run))
        if key == ("source",):
            data.source = value
        else:
            data.by_dataset.setdefault(key[0], {})[key[1]] = value
    pairs = [CkaPair(a, b, estimator, layer, v) for (a, b, layer), (_, v) in latest_cka.items()]
    for pair in pairs:
        for run in (pair.a, pair.b):
            runs.setdefault(run, RunData(run))
    return dict(sorted(runs.items(), key=lambda kv: (kv[0].row, kv[0].seed))), pairs


# -- building tables --------------------------------------------------------------------------

RowValues = Callable[[RowKey, list[RunData]], list[float]]


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
                top = max(float(_shown(c.mean, column.unit)) for c in cells)
                for c in cells:
                    c.best = float(_shown(c.mean, column.unit)) == top
            ref = base.cells[column.key] if base else None
            if not column.test or ref is None or ref.n < 2:
                continue
            for r in members:
                cell = r.cells[column.key]
                if r is not base and cell is not None and cell.n >= 2:
                    cell.p = welch_p(cell, ref)
    return [r for r in out if any(c is not None for c in r.cells.values())]


# Statistics with scipy.special alone: importing scipy.stats costs more than a whole report, and
# ttest_ind's array machinery ~2 ms a call. Tests check these against scipy.stats.


def welch_p(a: Cell, b: Cell) -> float | None:
    """Two-sided p of Welch's t-test, as scipy.stats.ttest_ind(equal_var=False); None: undefined."""
    from scipy.special import stdtr

    va, vb = (a.std or 0.0) ** 2 / a.n, (b.std or 0.0) ** 2 / b.n
    if a.n < 2 or b.n < 2:
        return None
    if va + vb == 0:  # both constant: scipy's t is ±inf (p = 0) or nan
        return None if a.mean == b.mean else 0.0
    t = (a.mean - b.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    return float(2 * stdtr(df, -abs(t)))


def _pearson(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(r, two-sided p) as scipy.stats.pearsonr; nan for constant input."""
    from scipy.special import stdtr

    mx, my = math.fsum(xs) / len(xs), math.fsum(ys) / len(ys)
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx, syy = math.fsum((x - mx) ** 2 for x in xs), math.fsum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return math.nan, math.nan
    r = max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))
    if abs(r) == 1.0:
        return r, 0.0
    df = len(xs) - 2
    return r, float(2 * stdtr(df, -abs(r) * math.sqrt(df / (1 - r * r))))


def _ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank (scipy.stats.rankdata's default)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _shown(value: float, unit: str) -> str:
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


def _build(
    name: str, runs: dict[RunKey, RunData], cka: list[CkaPair], config: ReportConfig
) -> Table | None:
    builders = {
        "summary": _summary_table,
        "transfer": _transfer_table,
        "separation": _separation_table,
        "finetune": _finetune_table,
        "cka": _cka_table,
    }
    return builders[name](list(runs.values()), cka, config)


def _transfer_table(runs: list[RunData], _cka: list[CkaPair], config: ReportConfig) -> Table | None:
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
    (r, p), (rho, p_rho) = _pearson(xs, ys), _pearson(_ranks(xs), _ranks(ys))
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
        f"Pearson r = {_fmt_stat(corr['pearson_r'])} (p = {_fmt_p(corr['pearson_p'])}), "
        f"Spearman ρ = {_fmt_stat(corr['spearman_rho'])} (p = {_fmt_p(corr['spearman_p'])})"
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


def _summary_table(runs: list[RunData], cka: list[CkaPair], config: ReportConfig) -> Table | None:
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


def _fmt_stat(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.3f}"


def _fmt_p(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.2g}"


def _setups(runs: Iterable[RunData]) -> list[str]:
    return sorted({r.key.row.setup for r in runs})


def _separation_table(
    runs: list[RunData], _cka: list[CkaPair], config: ReportConfig
) -> Table | None:
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


def _finetune_table(runs: list[RunData], _cka: list[CkaPair], config: ReportConfig) -> Table | None:
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


def _cka_table(_runs: list[RunData], cka: list[CkaPair], config: ReportConfig) -> Table | None:
    """Per layer: CKA between runs of one objective (other seeds) vs between objectives."""
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


# -- rendering --------------------------------------------------------------------------------


def render(report: Report, fmt: str) -> str:
    """The report as text in one format (rich: plain text, as a terminal without colour shows)."""
    if fmt == "json":
        from lossxfer.results import dumps

        return dumps(report.to_dict()) + "\n"
    if fmt == "rich":
        from rich.console import Console

        # wide enough never to wrap a cell: a file or pipe has no width to fit
        console = Console(file=io.StringIO(), width=1000, color_system=None, soft_wrap=True)
        console.print(rich_tables(report))
        out = console.file.getvalue()  # type: ignore[attr-defined]
        return "\n".join(line.rstrip() for line in out.splitlines()) + "\n"
    renderers = {"markdown": _markdown, "csv": _delimited, "tsv": _delimited, "latex": _latex}
    if fmt not in renderers:
        raise UsageError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    parts = [renderers[fmt](t, fmt) for t in report.tables]
    if fmt in ("csv", "tsv") and len(parts) == 1:  # one table: plain CSV, no title comment
        parts = [parts[0].partition("\n")[2]]
    return "\n".join(parts)


def _cell_parts(cell: Cell, column: Column, row: Row) -> tuple[str, str, str]:
    """(value, mark, count): '76.3 ± 0.1', '†', ' (n=2)' (count only where it differs)."""
    text = _shown(cell.mean, column.unit)
    if cell.std is not None:
        text += f" ± {_shown(cell.std, column.unit)}"
    mark = DAGGER if cell.significant else ""
    count = f" (n={cell.n})" if cell.n != row.n else ""
    return text, mark, count


def _header(table: Table) -> list[str]:
    head = ["Group"] if table.grouped else []
    head.append(table.first)
    if table.rows and table.rows[0].n is not None:
        head.append("n")
    return head + [c.title for c in table.columns]


def _labels(table: Table) -> int:
    """How many leading columns are labels (left-aligned): group (if any) and the row label."""
    return 2 if table.grouped else 1


def _cells(
    table: Table, row: Row, bold: Callable[[str], str], dagger: str, missing: str
) -> list[str]:
    out = [row.group] if table.grouped else []
    out.append(row.label)
    if row.n is not None:
        out.append(str(row.n))
    for column in table.columns:
        cell = row.cells.get(column.key)
        if cell is None:
            out.append(missing)
            continue
        text, mark, count = _cell_parts(cell, column, row)
        out.append((bold(text) if cell.best else text) + (dagger if mark else "") + count)
    return out


def _markdown(table: Table, _fmt: str) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    head = _header(table)
    lines = [f"### {table.title}", "", "| " + " | ".join(map(esc, head)) + " |"]
    aligns = ["---"] * _labels(table) + ["---:"] * (len(head) - _labels(table))
    lines.append("|" + "|".join(aligns) + "|")
    for row in table.rows:
        cells = _cells(table, row, lambda t: f"**{t}**", DAGGER, "–")
        lines.append("| " + " | ".join(map(esc, cells)) + " |")
    lines += ["", *table.notes]
    return "\n".join(lines) + "\n"


def _delimited(table: Table, fmt: str) -> str:
    """CSV/TSV: the table's title as a comment line, then the cells as shown (no bold)."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
    writer.writerow(_header(table))
    for row in table.rows:
        writer.writerow(_cells(table, row, lambda t: t, DAGGER, ""))
    return f"# {table.title}\n{buf.getvalue()}"


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "²": r"$^2$",
    "±": r"$\pm$",
}


def _tex(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def _latex(table: Table, _fmt: str) -> str:
    """A booktabs tabular; title and notes as comments, ready to wrap in a table environment."""
    head = _header(table)
    spec = "l" * _labels(table) + "r" * (len(head) - _labels(table))
    lines = [f"% {table.title}", r"\begin{tabular}{" + spec + "}"]
    lines += [r"\toprule", " & ".join(_tex(h) for h in head) + r" \\", r"\midrule"]
    previous = None
    for row in table.rows:
        if previous is not None and row.group != previous:
            lines.append(r"\midrule")
        previous = row.group
        cells = _cells(table, row, lambda t: "\0" + t + "\1", "\2", "--")
        escaped = (
            _tex(c).replace("\0", r"\textbf{").replace("\1", "}").replace("\2", r"$^\dagger$")
            for c in cells
        )
        lines.append(" & ".join(escaped) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", *(f"% {n}" for n in table.notes)]
    return "\n".join(lines) + "\n"


def rich_tables(report: Report) -> Any:
    """One Rich renderable for a terminal: the tables with bold best values, notes beneath."""
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    out: list[Any] = []
    for table in report.tables:
        rt = RichTable(title=table.title, caption="\n".join(table.notes), caption_justify="left")
        head = _header(table)
        for i, name in enumerate(head):
            rt.add_column(name, justify="left" if i < _labels(table) else "right")
        for row in table.rows:
            cells = _cells(table, row, lambda t: "\0" + t + "\1", DAGGER, "–")
            rendered = []
            for c in cells:
                text = Text()
                before, _, rest = c.partition("\0")
                bold, _, after = rest.partition("\1")
                text.append(before)
                text.append(bold, style="bold")
                text.append(after)
                rendered.append(text)
            rt.add_row(*rendered)
        out += [Text()] * bool(out) + [rt]
    return Group(*out)


def _table_dict(table: Table) -> dict[str, Any]:
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
        "name": table.name,
        "title": table.title,
        "columns": [dataclasses.asdict(c) for c in table.columns],
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
            for r in table.rows
        ],
        "notes": table.notes,
        **table.extra,
    }
