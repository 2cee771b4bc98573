"""Class separation R² and representation statistics of stored layers, in one streamed pass.

Per layer, from one pass over row blocks of an activation store (float64 accumulation):

- R² (docs/method.md §6) on L2-normalised rows x̂, classes weighted equally, self-pairs included.
  With μ_k the mean of x̂ over class k: d̄_within = 1 − (1/K)Σ_k‖μ_k‖², d̄_total =
  1 − ‖(1/K)Σ_k μ_k‖², R² = 1 − d̄_within/d̄_total; class k's own within-class distance is
  1 − ‖μ_k‖². Memory O(K·D). Rows of all zeros have no direction: they are counted
  (`zero_rows`), logged and left out of R² only.
- sparsity: mean over rows of the fraction of exact zeros in the row.
- dead units: units that are zero on every row of the split.
- effective dimensionality: participation ratio of the covariance spectrum,
  (Σλ)²/Σλ² = tr(C)²/‖C‖_F² with C = (1/N)Σ(x − x̄)(x − x̄)ᵀ on the raw rows.
- NC1 (Papyan et al. 2020): tr(Σ_W Σ_B⁺)/K with Σ_W = (1/N)Σ_i (x_i − m_{y_i})(x_i − m_{y_i})ᵀ
  (pooled within-class covariance), Σ_B = (1/K)Σ_k (m_k − m̄)(m_k − m̄)ᵀ, m_k the class means of
  the raw rows and m̄ their unweighted mean.

The last two need Σxxᵀ, an O(D²) accumulator: they are skipped (null, with a warning) for layers
wider than `max_cov_dim`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from lossxfer.errors import InputError, UsageError
from lossxfer.progress import ProgressFn, no_progress
from lossxfer.results import Record, Result, input_record
from lossxfer.store import Store, open_store

LOG = logging.getLogger("lossxfer")


@dataclass(frozen=True)
class SeparationConfig:
    """What to measure. Empty `layers` means `penultimate` (else the store's last layer) and
    `("all",)` every layer; `split=None` means `test` if the store has it, else `train`."""

    store: str
    layers: tuple[str, ...] = ()
    split: str | None = None
    block_rows: int = 4096
    max_cov_dim: int = 4096


def _add_by_class(acc: np.ndarray, cls: np.ndarray, rows: np.ndarray) -> None:
    """acc[k] += sum of rows of class k, in O(rows) (sort + reduceat, not a one-hot product)."""
    if len(cls) == 0:
        return
    order = np.argsort(cls, kind="stable")
    present, starts = np.unique(cls[order], return_index=True)
    acc[present] += np.add.reduceat(rows[order], starts, axis=0)


@dataclass
class Separation(Record):
    """Class separation R² and the representation statistics of one layer: the record's
    `metrics.layers[layer]` (see the module docstring for each definition)."""

    r2: float | None
    d_within: float
    d_total: float
    per_class_within: dict[str, float]
    class_rows: dict[str, int]
    classes: int
    rows: int
    zero_rows: int
    dim: int
    sparsity: float
    dead_units: int
    effective_dim: float | None
    nc1: float | None
    warnings: list[str] = field(default_factory=list)


class SeparationAccumulator:
    """Running float64 sums for one layer: `update` per row block, `merge` of accumulators fed
    disjoint rows (shards), `result` for the statistics. Memory O(K·D), plus O(D²) for
    effective dim and NC1 when D ≤ `max_cov_dim`. Classes are the labels seen, in sorted order.
    `where` names the data in errors and warnings."""

    def __init__(self, max_cov_dim: int = 4096, where: str = "arrays") -> None:
        self.max_cov_dim = max_cov_dim
        self.where = where
        self.labels = np.zeros(0, np.int64)  # sorted class labels seen so far
        self.dim = -1  # set by the first block
        self.rows = np.zeros(0, np.int64)
        self.unit_rows = np.zeros(0, np.int64)  # rows with a direction (non-zero)
        self.unit_sum = np.zeros((0, 0))  # Σ x̂ per class
        self.zero_fraction_sum = 0.0
        self.alive = np.zeros(0, bool)
        # Raw sums are taken about `shift` (the first block's mean) to avoid cancellation in
        # Σxxᵀ − N x̄x̄ᵀ when the mean is large next to the spread (ReLU features).
        self.shift: np.ndarray | None = None
        self.raw_sum: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def _start(self, dim: int) -> None:
        if self.dim == dim:
            return
        if self.dim >= 0:
            raise InputError(f"{self.where}: rows of width {dim} after rows of width {self.dim}")
        self.dim = dim
        self.unit_sum = np.zeros((0, dim))
        self.alive = np.zeros(dim, bool)
        if dim <= self.max_cov_dim:
            self.raw_sum, self.m2 = np.zeros((0, dim)), np.zeros((dim, dim))

    def _classes(self, labels: np.ndarray) -> np.ndarray:
        """Indices of `labels` among the classes, adding unseen ones (in sorted place)."""
        new = np.setdiff1d(labels, self.labels)
        if len(new):
            merged = np.union1d(self.labels, new)
            at = np.searchsorted(merged, self.labels)

            def grow(a: np.ndarray) -> np.ndarray:
                out = np.zeros((len(merged), *a.shape[1:]), a.dtype)
                out[at] = a
                return out

            self.labels, self.rows, self.unit_rows = merged, grow(self.rows), grow(self.unit_rows)
            self.unit_sum = grow(self.unit_sum)
            if self.raw_sum is not None:
                self.raw_sum = grow(self.raw_sum)
        return np.searchsorted(self.labels, labels)

    def update(self, x: Any, labels: Any) -> None:
        """Add a block of rows (rows × features) and their integer class labels."""
        x, labels = _rows(x, self.where), _labels(labels, len(x), self.where)
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            row = int(self.rows.sum()) + int(np.argmin(finite))
            raise InputError(f"{self.where} row {row} is not finite")
        self._start(x.shape[1])
        if len(x) == 0:
            return
        cls = self._classes(labels)
        zeros = x == 0
        self.zero_fraction_sum += float(zeros.mean(axis=1).sum())
        self.alive |= ~zeros.all(axis=0)
        self.rows += np.bincount(cls, minlength=len(self.rows))
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        keep = norms > 0
        self.unit_rows += np.bincount(cls[keep], minlength=len(self.rows))
        _add_by_class(self.unit_sum, cls[keep], x[keep] / norms[keep, None])
        if self.raw_sum is not None and self.m2 is not None:
            if self.shift is None:
                self.shift = x.mean(axis=0)
            xc = x - self.shift
            _add_by_class(self.raw_sum, cls, xc)
            self.m2 += xc.T @ xc

    def merge(self, other: SeparationAccumulator) -> SeparationAccumulator:
        """Add the sums of `other` (fed other rows of the same layer); returns self."""
        if other.dim < 0:
            return self
        self._start(other.dim)
        if (self.m2 is None) != (other.m2 is None):
            raise UsageError("merge: accumulators with different max_cov_dim")
        at = self._classes(other.labels)
        self.rows[at] += other.rows
        self.unit_rows[at] += other.unit_rows
        self.unit_sum[at] += other.unit_sum
        self.zero_fraction_sum += other.zero_fraction_sum
        self.alive |= other.alive
        if self.raw_sum is not None and self.m2 is not None and other.shift is not None:
            assert other.raw_sum is not None and other.m2 is not None
            if self.shift is None:
                self.shift = other.shift
            # Re-centre other's sums on our shift: x − a = (x − b) + δ with δ = b − a.
            delta = other.shift - self.shift
            total = other.raw_sum.sum(axis=0)
            self.raw_sum[at] += other.raw_sum + other.rows[:, None] * delta
            n = float(other.rows.sum())
            self.m2 += other.m2 + np.outer(total, delta) + np.outer(delta, total)
            self.m2 += n * np.outer(delta, delta)
        return self

    def result(self) -> Separation:
        """The statistics of every row added; InputError with fewer than 2 usable classes."""
        warnings: list[str] = []

        def warn(message: str) -> None:
            LOG.warning("%s: %s", self.where, message)
            warnings.append(message)

        labels = self.labels
        n = int(self.rows.sum())
        if n == 0:
            raise InputError(f"{self.where}: no rows")
        zero_rows = n - int(self.unit_rows.sum())
        if zero_rows:
            warn(f"{zero_rows} of {n} rows are all zeros (no direction); left out of R²")
        has_dir = self.unit_rows > 0
        for k in np.flatnonzero(~has_dir):
            warn(f"class {labels[k]} has only all-zero rows; left out of R²")
        if has_dir.sum() < 2:
            raise InputError(
                f"{self.where}: R² needs at least 2 classes with non-zero rows, found "
                f"{int(has_dir.sum())}"
            )
        for k in np.flatnonzero(self.unit_rows == 1):
            warn(f"class {labels[k]} has a single row: its within-class distance is 0 (self-pair)")
        means = self.unit_sum[has_dir] / self.unit_rows[has_dir, None]
        within = 1.0 - np.einsum("kd,kd->k", means, means)
        d_within = float(within.mean())
        grand = means.mean(axis=0)
        d_total = float(1.0 - grand @ grand)
        if d_total > 1e-12:  # below this, rounding noise: the rows share one direction
            r2: float | None = 1.0 - d_within / d_total
        else:
            r2 = None
            warn("all rows point the same way (d̄_total = 0): R² undefined")
        effective_dim = nc1 = None
        if self.raw_sum is None or self.m2 is None:
            warn(f"{self.dim} units > max_cov_dim: effective_dim and nc1 not computed")
        else:
            effective_dim, nc1 = self._covariance_stats(warn)
        return Separation(
            r2=r2,
            d_within=d_within,
            d_total=d_total,
            per_class_within={
                str(c): float(w) for c, w in zip(labels[has_dir], within, strict=True)
            },
            class_rows={str(c): int(r) for c, r in zip(labels, self.rows, strict=True)},
            classes=int(has_dir.sum()),
            rows=n,
            zero_rows=zero_rows,
            dim=self.dim,
            sparsity=self.zero_fraction_sum / n,
            dead_units=int((~self.alive).sum()),
            effective_dim=effective_dim,
            nc1=nc1,
            warnings=warnings,
        )

    def _covariance_stats(self, warn: Callable[[str], None]) -> tuple[float | None, float | None]:
        assert self.raw_sum is not None and self.m2 is not None
        n = self.rows.sum()
        mean = self.raw_sum.sum(axis=0) / n
        cov = self.m2 / n - np.outer(mean, mean)
        trace = float(np.trace(cov))
        effective_dim = trace**2 / float((cov * cov).sum()) if trace > 0 else None
        class_means = self.raw_sum / self.rows[:, None]
        within = (self.m2 - (class_means.T * self.rows) @ class_means) / n
        k = len(class_means)
        centred = (class_means - class_means.mean(axis=0)).T / np.sqrt(k)  # Σ_B = AAᵀ
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        keep = s > s.max(initial=0.0) * max(centred.shape) * np.finfo(float).eps
        if not keep.any():
            warn("all class means coincide (Σ_B = 0): NC1 undefined")
            return effective_dim, None
        # tr(Σ_W Σ_B⁺) = Σ_j u_jᵀ Σ_W u_j / s_j² over the non-zero singular pairs of A.
        u = u[:, keep]
        nc1 = float((np.einsum("dj,de,ej->j", u, within, u) / s[keep] ** 2).sum()) / k
        return effective_dim, nc1


def default_split(store: Store) -> str:
    """The paper measures separation on the source data: `test` if extracted, else `train`."""
    return "test" if "test" in store.splits else "train"


def default_layers(store: Store, split: str) -> tuple[str, ...]:
    layers = store.layers(split)
    if not layers:
        raise InputError(f"{store.path}: split {split!r} holds no layers")
    return ("penultimate",) if "penultimate" in layers else (layers[-1],)


def separation(
    store: Store,
    split: str,
    layers: tuple[str, ...],
    block_rows: int = 4096,
    max_cov_dim: int = 4096,
    progress: ProgressFn = no_progress,
) -> dict[str, Separation]:
    """Per-layer statistics of one split, all layers in one pass over the rows."""
    total = store.num_rows(split)
    if total == 0:
        raise InputError(f"{store.path}: split {split!r} has no rows")
    stats = {
        layer: SeparationAccumulator(max_cov_dim, f"{store.path}: /{split}/{layer}")
        for layer in layers
    }
    progress("separation", 0, total)
    for block in store.blocks(split, layers, block_rows=block_rows, dtype="float64"):
        for layer, x in block.layers.items():
            stats[layer].update(x, block.labels)
        progress("separation", block.start + len(block.labels), total)
    return {layer: s.result() for layer, s in stats.items()}


def class_separation(
    x: Any, labels: Any, *, max_cov_dim: int = 4096, block_rows: int = 4096
) -> Separation:
    """R² and the other statistics of rows `x` (numpy, torch or CuPy, rows × features) with
    integer class `labels`: `SeparationAccumulator` fed `block_rows` rows at a time (float64,
    memory O(block_rows·D)), the same numbers as `lossxfer separation` on a store of them."""
    _check_options(block_rows, max_cov_dim)
    n = len(x)
    _labels(labels, n, "arrays")
    acc = SeparationAccumulator(max_cov_dim)
    for lo in range(0, n, block_rows):
        acc.update(x[lo : lo + block_rows], labels[lo : lo + block_rows])
    return acc.result()


def _check_options(block_rows: int, max_cov_dim: int) -> None:
    if block_rows < 1:
        raise UsageError(f"--block-rows must be at least 1, got {block_rows}")
    if max_cov_dim < 0:
        raise UsageError(f"--max-cov-dim must be at least 0, got {max_cov_dim}")


def _numpy(a: Any) -> np.ndarray:
    """numpy view or copy of a numpy, torch (any device) or CuPy array."""
    if hasattr(a, "detach"):  # torch
        return np.asarray(a.detach().cpu())
    if hasattr(a, "get") and hasattr(a, "__cuda_array_interface__"):  # CuPy
        return np.asarray(a.get())
    return np.asarray(a)


def _rows(x: Any, where: str) -> np.ndarray:
    rows = _numpy(x)
    if rows.ndim != 2:
        raise InputError(f"{where}: expected rows × features, got shape {rows.shape}")
    if not (np.issubdtype(rows.dtype, np.number) or rows.dtype == bool):
        raise InputError(f"{where}: expected numbers, got {rows.dtype}")
    return rows.astype(np.float64, copy=False)


def _labels(labels: Any, n: int, where: str) -> np.ndarray:
    out = _numpy(labels)
    if out.shape != (n,):
        raise InputError(f"{where}: expected {n} labels, got shape {out.shape}")
    if not np.issubdtype(out.dtype, np.integer):
        raise InputError(f"{where}: labels must be integers, got {out.dtype}")
    return out.astype(np.int64, copy=False)


def run_separation(config: SeparationConfig, progress: ProgressFn = no_progress) -> Result:
    """Measure a store and wrap the numbers in a `separation` result record."""
    _check_options(config.block_rows, config.max_cov_dim)
    started = time.perf_counter()
    with open_store(config.store) as store:
        split = config.split or default_split(store)
        if config.layers == ("all",):
            layers = tuple(store.layers(split))
        else:
            layers = config.layers or default_layers(store, split)
        if len(set(layers)) != len(layers):
            raise UsageError(f"--layer: repeated layer in {', '.join(layers)}")
        metrics = separation(
            store, split, layers, config.block_rows, config.max_cov_dim, progress=progress
        )
        attrs = store.attrs
        model = attrs.get("model")
        rows = store.num_rows(split)
    wall = time.perf_counter() - started
    resolved = replace(config, split=split, layers=tuple(layers))
    return Result(
        kind="separation",
        metrics={"split": split, "layers": {k: v.to_dict() for k, v in metrics.items()}},
        config=asdict(resolved),
        inputs=[input_record(config.store)],
        model=model if isinstance(model, dict) else {},
        dataset=attrs.get("dataset"),
        timing={"wall_s": wall, "rows_per_s": rows / wall if wall > 0 else None},
    )
