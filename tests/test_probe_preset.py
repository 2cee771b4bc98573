"""`probe --preset fast`: fewer λ values and float32 iterations polished in float64."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CliRun
from test_probe import blobs, feats, write_store

from lossxfer.probe.linear import LogisticProblem, lambda_grid
from lossxfer.probe.methods import PRESETS


@pytest.mark.parametrize("spread", [0.3, 3.0], ids=["separable", "overlapping"])
@pytest.mark.parametrize("lam", [1e-1, 1e-4])
def test_mixed_solve_meets_the_float64_tolerance_at_the_float64_solution(
    spread: float, lam: float
) -> None:
    x, y = blobs(300, 8, spread, seed=3)
    problem = LogisticProblem(feats(x, y))
    exact = problem.solve(lam, tol=1e-7, max_iter=5000)
    mixed = LogisticProblem(feats(x, y), mixed=True).solve(lam, tol=1e-7, max_iter=5000)
    assert mixed.theta.dtype == torch.float64
    assert mixed.converged and mixed.grad_max <= 1e-7  # the float64 gradient, not float32's

    def loss(theta: torch.Tensor) -> float:  # at uncentred theta
        centred = theta.clone()
        centred[:, -1] += theta[:, :-1] @ problem.mean
        return problem.objective(centred.reshape(-1), lam)[0]

    # both stationary to 1e-7 of one strictly convex objective: the same minimum, and weights
    # within the strong-convexity bound ‖ΔW‖ ≤ (‖g₁‖ + ‖g₂‖) / λ
    assert abs(loss(mixed.theta) - loss(exact.theta)) <= 1e-9 * max(1.0, loss(exact.theta))
    bound = 2 * np.sqrt(exact.theta.numel()) * 1e-7 / lam
    assert float((mixed.theta[:, :-1] - exact.theta[:, :-1]).norm()) <= bound
    same = mixed.predict(feats(x, y).x) == exact.predict(feats(x, y).x)
    assert float(same.double().mean()) >= 0.99


def test_presets() -> None:
    assert (PRESETS["paper"].grid, PRESETS["paper"].mixed) == (45, False)
    fast = PRESETS["fast"]
    assert fast.mixed and fast.grid_range == PRESETS["paper"].grid_range
    # one λ a decade over 1e-6 … 1e5: every fast value is also on the paper's grid
    paper = lambda_grid(45, *PRESETS["paper"].grid_range)
    assert all(any(abs(v / p - 1) < 1e-9 for p in paper) for v in fast.lambdas())


def test_cli_fast_preset(tmp_path: Path, cli: Callable[..., CliRun]) -> None:
    x, y = blobs(200, 6, 2.0, seed=4)
    splits = {"train": (x[:150], y[:150]), "test": (x[150:], y[150:])}
    store = write_store(tmp_path / "acts.h5", splits)
    fast = cli("probe", store, "--method", "linear", "--preset", "fast", "--json", "-q")
    paper = cli("probe", store, "--method", "linear", "--json", "-q")
    assert fast.code == 0 and paper.code == 0, fast.stderr + paper.stderr
    got = json.loads(fast.stdout)["metrics"]["layers"]["penultimate"]["linear"]
    ref = json.loads(paper.stdout)["metrics"]["layers"]["penultimate"]["linear"]
    assert len(got["val_curve"]) == 12 and len(ref["val_curve"]) == 45
    assert got["mixed"] is True and ref["mixed"] is False and got["converged"]
    assert json.loads(fast.stdout)["config"]["mixed"] is True
    assert abs(got["test_top1"] - ref["test_top1"]) <= 0.05
    override = cli(
        "probe", store, "--method", "linear", "--preset", "fast", "--grid", "3", "--json"
    )
    curve = json.loads(override.stdout)["metrics"]["layers"]["penultimate"]["linear"]["val_curve"]
    assert len(curve) == 3
    typo = cli("probe", store, "--preset", "fats")
    assert typo.code == 2 and "did you mean 'fast'" in typo.stderr
    assert np.isfinite(got["chosen"])
