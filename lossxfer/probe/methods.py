"""The probe methods (`linear`, `ridge`, `knn`): one registry that the array functions, the
store runner, `--help`, completion and validation all read, and the options they share.

Registry entries are light (each imports its solver, and torch, when called). Every method
runs the same protocol (docs/method.md §4) on `ProbeSplits`: choose the hyperparameter on
fit → val, fit again on refit (train + val) with it, and score the test rows.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lossxfer.errors import UsageError
from lossxfer.progress import ProgressFn
from lossxfer.registry import Registry, check_choice
from lossxfer.results import Record

if TYPE_CHECKING:
    from lossxfer.probe.common import ProbeSplits

LOG = logging.getLogger("lossxfer")
DEFAULT_METHODS = ("linear", "knn")  # the paper's two fixed-feature probes; ridge is a screen


@dataclasses.dataclass(frozen=True)
class ProbeOptions:
    """Solver options (the CLI's --grid, --grid-range, --tol, --max-iter, --standardize,
    --preset); each method reads the ones it has (knn none). `mixed` (linear, on float64 data):
    iterate in float32 to 1e-4, then polish in float64 to `tol`, so every solution meets the
    same float64 test; fast where the problem is well conditioned (few polishing steps)."""

    grid: int = 45
    grid_range: tuple[float, float] = (1e-6, 1e5)
    tol: float = 1e-6
    max_iter: int = 1000
    standardize: bool = False
    mixed: bool = False

    def check(self) -> None:
        lo, hi = self.grid_range
        if self.grid < 1:
            raise UsageError(f"--grid must be at least 1, got {self.grid}")
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise UsageError(f"--grid-range {lo:g},{hi:g}: expected 0 < LO <= HI")
        if not self.tol > 0:
            raise UsageError(f"--tol must be positive, got {self.tol:g}")
        if self.max_iter < 1:
            raise UsageError(f"--max-iter must be at least 1, got {self.max_iter}")

    def lambdas(self) -> list[float]:
        from lossxfer.probe.linear import lambda_grid

        return lambda_grid(self.grid, *self.grid_range)


@dataclasses.dataclass
class ProbeFit(Record):
    """One method on one layer: the record's `metrics.layers[layer][method]`. `chosen` is λ
    (linear, ridge) or k (knn); `extra` holds each method's own keys (the λ parametrisation,
    tie and stop rules, solver diagnostics, the kNN vote)."""

    test_top1: float
    test_mean_per_class: float
    val_top1: float
    chosen: float
    val_curve: list[dict[str, Any]]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


# --preset: the paper's sweep (the default) and a cheaper one whose measured accuracy
# difference is in docs/benchmarks.md (benchmarks/bench_probe_preset.py).
PRESETS = {
    "paper": ProbeOptions(),
    "fast": ProbeOptions(grid=12, mixed=True),  # about one λ a decade over the same range
}


ProbeMethod = Callable[["ProbeSplits", ProbeOptions, ProgressFn, str], ProbeFit]
PROBES: Registry[ProbeMethod] = Registry("probe method")


def check_methods(methods: tuple[str, ...]) -> tuple[str, ...]:
    """Registered names in order, each once; `all` = every method; a typo is exit 2."""
    for name in methods:
        try:
            check_choice("probe method", name, [*PROBES.names(), "all"])
        except UsageError as exc:
            raise UsageError(f"--method: {exc}") from None
    return tuple(PROBES.names()) if "all" in methods else tuple(dict.fromkeys(methods))


def _fit(out: dict[str, Any]) -> ProbeFit:
    return ProbeFit.from_dict(out, source="probe")


@PROBES.register("linear")
def linear(data: ProbeSplits, options: ProbeOptions, progress: ProgressFn, label: str) -> ProbeFit:
    """Multinomial logistic regression, mean CE + λ/2‖W‖², L-BFGS (the paper's linear probe)."""
    from lossxfer.probe.linear import linear_sweep

    out = linear_sweep(
        *data,
        options.lambdas(),
        tol=options.tol,
        max_iter=options.max_iter,
        standardize=options.standardize,
        mixed=options.mixed,
        progress=progress,
        label=label,
    )
    if not out["converged"]:
        LOG.warning("%s: the refit stopped before max|∇| <= tol", label)
    return _fit(out)


@PROBES.register("ridge")
def ridge(data: ProbeSplits, options: ProbeOptions, progress: ProgressFn, label: str) -> ProbeFit:
    """One-vs-all ridge regression on one-hot targets; the whole λ grid from one eigensolve."""
    from lossxfer.probe.ridge import ridge_sweep

    return _fit(ridge_sweep(*data, options.lambdas(), options.standardize, progress, label))


@PROBES.register("knn")
def knn(data: ProbeSplits, options: ProbeOptions, progress: ProgressFn, label: str) -> ProbeFit:
    """k nearest neighbours by cosine similarity; k and the vote chosen on validation."""
    from lossxfer.probe.knn import knn_sweep

    return _fit(knn_sweep(*data, progress, label))
