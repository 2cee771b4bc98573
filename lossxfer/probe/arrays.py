"""The probes on arrays: `linear_probe`, `ridge_probe`, `knn_probe` (docs/api.md).

Same protocol, solvers and numbers as `lossxfer probe` on a store holding the same rows: the
store runner reads each split and calls `probe_features` below. Arrays may be numpy, torch (CPU or
CUDA) or CuPy; the device is resolved once, and the work runs in float64 on the CPU, float32
on a GPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lossxfer.probe.methods import PROBES, ProbeFit, ProbeOptions
from lossxfer.progress import ProgressFn, no_progress

if TYPE_CHECKING:
    import torch

Array = Any  # numpy.ndarray, torch.Tensor or cupy.ndarray


def probe_features(
    method: str,
    x_train: Array,
    y_train: Array,
    x_test: Array,
    y_test: Array,
    x_val: Array | None = None,
    y_val: Array | None = None,
    *,
    options: ProbeOptions | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: ProgressFn = no_progress,
) -> ProbeFit:
    """Run the registered probe `method` by the paper's protocol (docs/method.md §4).

    Without `x_val`, a stratified `val_fraction` of the training rows (chosen by row position
    and `seed`, as `lossxfer probe` does for a store without a val split) is held out to choose
    the hyperparameter; the final fit uses train + val either way.
    """
    import torch

    from lossxfer.backend import resolve_device
    from lossxfer.errors import UsageError
    from lossxfer.probe.common import as_features, protocol_splits

    run = PROBES.get(method)
    options = options or ProbeOptions()
    options.check()
    if not 0 < val_fraction < 1:
        raise UsageError(f"val_fraction must be in (0, 1), got {val_fraction:g}")
    if (x_val is None) != (y_val is None):
        raise UsageError("give both x_val and y_val, or neither")
    where = torch.device(device) if isinstance(device, torch.device) else resolve_device(device)
    dtype = torch.float64 if where.type == "cpu" else torch.float32
    train = as_features("x_train", x_train, y_train, where, dtype)
    test = as_features("x_test", x_test, y_test, where, dtype)
    val = None if x_val is None else as_features("x_val", x_val, y_val, where, dtype)
    splits, _ = protocol_splits("arrays", train, test, val, val_fraction, seed)
    return run(splits, options, progress, method)


def linear_probe(
    x_train: Array,
    y_train: Array,
    x_test: Array,
    y_test: Array,
    x_val: Array | None = None,
    y_val: Array | None = None,
    *,
    grid: int = 45,
    grid_range: tuple[float, float] = (1e-6, 1e5),
    tol: float = 1e-6,
    max_iter: int = 1000,
    standardize: bool = False,
    mixed: bool = False,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: ProgressFn = no_progress,
) -> ProbeFit:
    """The paper's linear probe: L2-regularised multinomial logistic regression (mean CE +
    λ/2‖W‖²_F, bias free) by L-BFGS, λ from `grid` log-spaced values over `grid_range` chosen
    on validation, refit on train + val, top-1 on test. `mixed`: float32 iterations polished
    in float64 (the `fast` preset's, ProbeOptions.mixed)."""
    options = ProbeOptions(grid, grid_range, tol, max_iter, standardize, mixed)
    return probe_features(
        "linear", x_train, y_train, x_test, y_test, x_val, y_val, options=options,
        val_fraction=val_fraction, seed=seed, device=device, progress=progress,
    )  # fmt: skip


def ridge_probe(
    x_train: Array,
    y_train: Array,
    x_test: Array,
    y_test: Array,
    x_val: Array | None = None,
    y_val: Array | None = None,
    *,
    grid: int = 45,
    grid_range: tuple[float, float] = (1e-6, 1e5),
    standardize: bool = False,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: ProgressFn = no_progress,
) -> ProbeFit:
    """One-vs-all ridge regression on one-hot targets (a fast screen): the λ grid from one
    eigendecomposition, chosen on validation, refit on train + val."""
    options = ProbeOptions(grid, grid_range, standardize=standardize)
    return probe_features(
        "ridge", x_train, y_train, x_test, y_test, x_val, y_val, options=options,
        val_fraction=val_fraction, seed=seed, device=device, progress=progress,
    )  # fmt: skip


def knn_probe(
    x_train: Array,
    y_train: Array,
    x_test: Array,
    y_test: Array,
    x_val: Array | None = None,
    y_val: Array | None = None,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: ProgressFn = no_progress,
) -> ProbeFit:
    """kNN by cosine similarity: k in {1, …, 200} and a weighted or majority vote chosen on
    validation; test rows classified against train + val."""
    return probe_features(
        "knn", x_train, y_train, x_test, y_test, x_val, y_val,
        val_fraction=val_fraction, seed=seed, device=device, progress=progress,
    )  # fmt: skip
