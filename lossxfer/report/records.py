"""Gathering: result records found under the given paths, resolved to runs and CKA pairs.

Records are joined into runs by model provenance (arch, objective, options, seed, training data,
checkpoint sha256); a record that cannot be used is listed with the reason, never guessed at.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossxfer.errors import InputError
from lossxfer.report.config import DEFAULT_LAYER, ReportConfig
from lossxfer.results import Result, load_result

# -- runs -------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class RowKey:
    """What a row averages over seeds: everything of a run's provenance except the seed."""

    arch: str
    source: str
    order: int  # position of the objective in the registry (paper order); unknown names last
    objective: str
    options: tuple[tuple[str, str], ...]  # non-default options: (name, canonical JSON value)
    # model.training, the resolved optimisation (epochs, lr, batch_size, ...); () if unrecorded
    training: tuple[tuple[str, str], ...] = ()
    # the training settings that tell this row from other rows of the same objective and options
    shown: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        opts = ", ".join(f"{k}={_unquote(v)}" for k, v in (*self.options, *self.shown))
        return f"{self.objective} ({opts})" if opts else self.objective

    @property
    def options_text(self) -> str:
        return ", ".join(f"{k}={_unquote(v)}" for k, v in self.options)

    @property
    def training_text(self) -> str:
        return ", ".join(f"{k}={_unquote(v)}" for k, v in self.shown)

    @property
    def objective_key(self) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
        """What may not differ in training settings without splitting the row."""
        return (self.arch, self.source, self.objective, self.options)

    @property
    def setup(self) -> str:
        return f"{self.arch} on {self.source}"


def _unquote(text: str) -> str:
    """A canonical JSON value as a label shows it: strings bare, 10.0 as 10."""
    value = json.loads(text)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
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
    same: dict[str, str] = field(default_factory=dict)  # cka: layer → identical later layer


# -- reading ----------------------------------------------------------------------------------


@dataclass
class Gathered:
    """What the records under the report's paths give: runs, CKA pairs, and what was not used."""

    runs: list[RunData]
    cka: list[CkaPair]
    skipped: list[Skipped]
    warnings: list[str]
    files: int  # how many files were looked at
    layers: list[str]  # every layer named by a probe, separation or CKA record
    # layers whose activations are identical to a later one (smallcnn's block3 = penultimate,
    # the pooled last block), as CKA records show them: shown once, under the later name
    same_layers: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """Row labels (objective and options) in table order: the choices of --baseline."""
        return list(dict.fromkeys(r.key.row.label for r in sorted(self.runs, key=_order)))


def _order(run: RunData) -> tuple[RowKey, int]:
    return run.key.row, run.key.seed


def gather(config: ReportConfig) -> Gathered:
    """Read every record under the paths and resolve them to runs (newest record wins).

    A --layer that no record has is a usage error (exit 2) before any table is built; without
    one, records that lack penultimate are skipped with the reason."""
    from lossxfer.registry import check_choice

    files, skipped = _find_files(config.paths)
    measures: list[_Measure] = []
    layers: dict[str, None] = {}
    for path in files:
        try:
            measures.extend(_read(path, config.layer or DEFAULT_LAYER, layers))
        except _Skip as exc:
            skipped.append(Skipped(str(path), str(exc)))
    if layers and config.layer is not None:
        check_choice("layer", config.layer, layers)
    warnings: list[str] = []
    joined, cka = _join(measures, config, skipped, warnings)
    same = {k: v for m in measures for k, v in m.same.items()}
    runs, cka = _split_training(list(joined.values()), cka, warnings)
    return Gathered(runs, cka, skipped, warnings, len(files), list(layers), same)


def _split_training(
    runs: list[RunData], cka: list[CkaPair], warnings: list[str]
) -> tuple[list[RunData], list[CkaPair]]:
    """Rows whose runs were trained differently (model.training) become separate rows.

    The settings that differ between runs of one objective are added to its label, e.g.
    `softmax (epochs=10)`; runs whose records predate model.training show `training=unrecorded`.
    """
    settings: dict[tuple[Any, ...], set[tuple[tuple[str, str], ...]]] = defaultdict(set)
    for run in runs:
        settings[run.key.row.objective_key].add(run.key.row.training)
    relabel: dict[RowKey, RowKey] = {}
    for run in runs:
        row = run.key.row
        seen = settings[row.objective_key]
        if len(seen) < 2 or row in relabel:
            continue
        keys = sorted({k for t in seen for k in dict(t)})
        differ = [k for k in keys if len({dict(t).get(k) for t in seen if t}) > 1]
        own = dict(row.training)
        shown = tuple((k, own[k]) for k in differ if k in own) if own else ()
        relabel[row] = dataclasses.replace(
            row, shown=shown or (("training", json.dumps("unrecorded")),)
        )
    for key in sorted(settings):
        if len(settings[key]) > 1:
            rows = sorted({new.label for old, new in relabel.items() if old.objective_key == key})
            warnings.append(
                f"{key[2]} on {key[1]}: runs trained with different settings are not pooled; "
                f"separate rows: {'; '.join(rows)}"
            )

    if not relabel:
        return runs, cka

    def move(run: RunKey) -> RunKey:
        return dataclasses.replace(run, row=relabel[run.row]) if run.row in relabel else run

    runs = sorted(
        (RunData(move(r.key), r.source, r.by_dataset) for r in runs),
        key=_order,
    )
    cka = [
        dataclasses.replace(p, a=move(p.a), b=move(p.b))
        if p.a.row in relabel or p.b.row in relabel
        else p
        for p in cka
    ]
    return runs, cka


def survey(paths: Iterable[Path]) -> tuple[list[str], list[str]]:
    """Row labels and layer names the records under `paths` name, for shell completion.

    Unusable records are passed over in silence: a completion never fails."""
    labels: dict[str, None] = {}
    layers: dict[str, None] = {}
    files, _ = _find_files(paths)
    for path in files:
        try:
            for m in _read(path, "", layers, strict=False):
                for base in (m.base, *(m.other[:1] if m.other else ())):
                    labels[base[0].label] = None
        except _Skip:
            continue
    return list(labels), list(layers)


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


def _read(path: Path, layer: str, layers: dict[str, None], strict: bool = True) -> list[_Measure]:
    """A record's numbers at `layer`; `strict=False` only reads its provenance and layers."""
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
    same: dict[str, str] = {}
    if isinstance(metrics.get("layers"), dict):
        layers.update(dict.fromkeys(map(str, metrics["layers"])))
    if not strict:
        if result.kind == "cka":
            other = _provenance(metrics.get("model_b", result.model), "metrics.model_b")
            if isinstance(metrics.get("layers_a"), list):
                layers.update(dict.fromkeys(map(str, metrics["layers_a"])))
        return [_Measure(str(path), created, result.kind, base, checkpoint, values, other)]
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
        diagonal, same = _cka_diagonal(metrics)
        layers.update(dict.fromkeys(diagonal))
        for name, value in diagonal.items():
            values[("cka", estimator, name)] = value
        if not values:
            raise _Skip("no layer appears in both metrics.layers_a and metrics.layers_b")
    return [_Measure(str(path), created, result.kind, base, checkpoint, values, other, same)]


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
    training = model.get("training") or {}
    if not isinstance(training, dict):
        raise _Skip(f"field '{where}.training' is not an object")
    settings = tuple((str(k), _canon(v)) for k, v in sorted(training.items()))
    row = RowKey(str(model["arch"]), str(source), order, objective, shown, settings)
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


def _cka_diagonal(metrics: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """CKA of each layer with the same-named layer of the other model, in layers_a order, and
    the layers that are the same activations as a later one (lossxfer.layers)."""
    from lossxfer.layers import identical_layers

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
    return out, identical_layers(a, b, matrix)


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
