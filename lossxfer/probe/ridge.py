"""Ridge probe: closed-form one-vs-all ridge regression on one-hot targets, a fast screen.

Objective per grid value λ: mean_i ‖W x_i + b − t_i‖² + λ‖W‖²_F (t one-hot, bias not
penalised), so with centred X̃, T̃: (X̃ᵀX̃/n + λI) W = X̃ᵀT̃/n. One eigendecomposition
X̃ᵀX̃ = V diag(s) Vᵀ (or of the Gram matrix X̃X̃ᵀ when there are fewer rows than features) turns
every grid point into a diagonal rescaling: scores(λ) = (X̃_new V) diag(1/(s + nλ)) (VᵀX̃ᵀT̃).
Computed in float64 on the chosen device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lossxfer.probe.common import (
    LAMBDA_TIE_RULE,
    Features,
    accuracies,
    first_best,
    one_thread_if_small,
    standardized,
)
from lossxfer.progress import ProgressFn, no_progress

GRID_PARAMETRISES = (
    "lambda in mean_i ||W x_i + b - onehot_i||^2 + lambda ||W||_F^2 (bias not penalised)"
)


@dataclass
class RidgeSpectrum:
    """Everything about the fitting rows that the grid points share."""

    classes: torch.Tensor
    x_mean: torch.Tensor
    t_mean: torch.Tensor
    rows: torch.Tensor | None  # centred fitting rows, kept only for the Gram (n < D) form
    basis: torch.Tensor  # eigenvectors: V (D × r), or U (n × r) for the Gram form
    s: torch.Tensor  # eigenvalues (r,)
    a: torch.Tensor  # targets in the eigenbasis (r × K)
    n: int

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """New rows in the eigen-coordinates: the part of the scores shared by all λ."""
        centred = x.to(self.x_mean) - self.x_mean
        if self.rows is None:
            return centred @ self.basis
        return (centred @ self.rows.T) @ self.basis

    def predict(self, projected: torch.Tensor, lam: float) -> torch.Tensor:
        scores = projected @ (self.a / (self.s + self.n * lam)[:, None]) + self.t_mean
        return self.classes[scores.argmax(1)]


def ridge_spectrum(data: Features) -> RidgeSpectrum:
    """One eigendecomposition of the smaller of the centred covariance and Gram matrices."""
    classes, idx = torch.unique(data.y, return_inverse=True)
    x = data.x.double()
    t = torch.nn.functional.one_hot(idx, len(classes)).to(x)
    x_mean, t_mean = x.mean(0), t.mean(0)
    xc, tc = x - x_mean, t - t_mean
    n, d = xc.shape
    if d <= n:
        s, basis = torch.linalg.eigh(xc.T @ xc)
        a, rows = basis.T @ (xc.T @ tc), None
    else:
        s, basis = torch.linalg.eigh(xc @ xc.T)
        a, rows = basis.T @ tc, xc
    return RidgeSpectrum(classes, x_mean, t_mean, rows, basis, s.clamp(min=0), a, n)


def ridge_sweep(
    fit: Features,
    val: Features,
    refit: Features,
    test: Features,
    grid: list[float],
    standardize: bool = False,
    progress: ProgressFn = no_progress,
    label: str = "ridge",
) -> dict[str, Any]:
    """Sweep `grid` (strongest first) on fit → val, choose λ, refit on refit → test."""
    with one_thread_if_small(refit):
        progress(label, 0, len(grid) + 1)
        if standardize:
            (fit, val), (refit, test) = standardized(fit, val), standardized(refit, test)
        spectrum = ridge_spectrum(fit)
        projected = spectrum.project(val.x)
        curve = [
            {"value": lam, "val_top1": accuracies(spectrum.predict(projected, lam), val.y)[0]}
            for lam in grid
        ]
        progress(label, len(grid), len(grid) + 1)
        chosen = first_best([p["val_top1"] for p in curve])
        final = ridge_spectrum(refit)
        pred = final.predict(final.project(test.x), grid[chosen])
        test_top1, test_mpc = accuracies(pred, test.y)
        progress(label, len(grid) + 1, len(grid) + 1)
    return {
        "test_top1": test_top1,
        "test_mean_per_class": test_mpc,
        "val_top1": curve[chosen]["val_top1"],
        "chosen": grid[chosen],
        "val_curve": curve,
        "grid_parametrises": GRID_PARAMETRISES,
        "tie_rule": LAMBDA_TIE_RULE,
    }
