"""Linear probe: our 45-point L-BFGS sweep against scikit-learn's on the same features.

Both run the protocol of docs/method.md §4 in this process on the same synthetic penultimate-like
features (class means in a low-dimensional latent space, random projection, ReLU): sweep the λ
grid from strong to weak with warm starts on the fit rows, choose λ by validation top-1 (ties →
strongest), refit on train (fit + val) from the chosen solution, score test. scikit-learn's
LogisticRegression(solver="lbfgs", warm_start=True) gets C = 1/(λ n), the same tolerance on
max|gradient| of the same objective and the same iteration cap. Prints times, the time ratio and
the accuracy difference.

Usage: .venv/bin/python benchmarks/bench_probe.py [--n 20000 --dim 512 --classes 100]

Measured here (2 shared cores, --threads 1 for both; same chosen λ and test top-1 each time):
  defaults, 4000 × 128, 20 classes:  lossxfer 1.7 s (514 it.), scikit-learn 9.5 s (3449 it.): 5.7×
  --n 8000 --dim 256 --classes 50:   lossxfer 7.5 s (409 it.), scikit-learn 66.5 s (2987 it.): 8.9×
And the issue's size, --threads 2 --n 20000 --dim 512 --classes 100 --test 5000: lossxfer
128.7 s (421 it.), scikit-learn 1176.5 s (2555 it.): 9.1×; same λ, test top-1 −0.02 points.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from lossxfer.data import held_out
from lossxfer.probe.common import ONE_THREAD_BELOW, Features, first_best
from lossxfer.probe.linear import lambda_grid, linear_sweep


def features(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Post-ReLU rows with class structure in a 64-d latent space, not linearly separable."""
    rng = np.random.default_rng(seed)
    latent = 64
    means = rng.normal(size=(classes, latent)) * 0.5
    proj = rng.normal(size=(latent, dim)) / np.sqrt(latent)
    y = rng.integers(0, classes, size=n)
    z = means[y] + rng.normal(size=(n, latent))
    return np.maximum(z @ proj + 0.3 * rng.normal(size=(n, dim)), 0).astype(np.float32), y


def sklearn_probe(
    fit: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    refit: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    grid: list[float],
    tol: float,
    max_iter: int,
) -> dict[str, float]:
    model = LogisticRegression(tol=tol, max_iter=max_iter, warm_start=True)
    scores, best, iterations = [], None, 0
    for lam in grid:
        model.set_params(C=1.0 / (lam * len(fit[1])))
        model.fit(*fit)
        iterations += int(model.n_iter_.max())
        scores.append(model.score(*val))
        if best is None or scores[-1] > max(scores[:-1]):
            best = copy.deepcopy(model)
    chosen = first_best(scores)
    assert best is not None
    best.set_params(C=1.0 / (grid[chosen] * len(refit[1])))
    best.fit(*refit)
    return {
        "test_top1": best.score(*test),
        "val_top1": scores[chosen],
        "chosen": grid[chosen],
        "sweep_iterations": iterations,
    }


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="train rows (fit + val)")
    parser.add_argument("--test", type=int, default=2000, help="test rows")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--grid", type=int, default=45)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for both (torch and BLAS)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, A B B A …")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    x, y = features(args.n + args.test, args.dim, args.classes, args.seed)
    train_x, train_y, test_x, test_y = x[: args.n], y[: args.n], x[args.n :], y[args.n :]
    held = held_out(np.arange(args.n), train_y, 0.2, args.seed)
    grid = lambda_grid(args.grid, 1e-6, 1e5)
    print(
        f"{args.n} train rows ({int(held.sum())} val) × {args.dim} features, {args.classes} "
        f"classes, {args.test} test rows; {args.grid} λ values; tol {args.tol:g}, max_iter "
        f"{args.max_iter}; torch threads {torch.get_num_threads()} (one below "
        f"{ONE_THREAD_BELOW} multiply-adds per product); BLAS threads as torch's with "
        f"--threads; {load()}",
        flush=True,
    )

    def tensors(rows: np.ndarray, labels: np.ndarray) -> Features:
        return Features(torch.from_numpy(rows).double(), torch.from_numpy(labels))

    x64 = x.astype(np.float64)

    def run_ours() -> tuple[dict, float]:
        tick = time.perf_counter()
        result = linear_sweep(
            tensors(train_x[~held], train_y[~held]),
            tensors(train_x[held], train_y[held]),
            tensors(train_x, train_y),
            tensors(test_x, test_y),
            grid,
            tol=args.tol,
            max_iter=args.max_iter,
        )
        return result, time.perf_counter() - tick

    def run_ref() -> tuple[dict, float]:
        tx, sx = x64[: args.n], x64[args.n :]
        tick = time.perf_counter()
        result = sklearn_probe(
            (tx[~held], train_y[~held]),
            (tx[held], train_y[held]),
            (tx, train_y),
            (sx, test_y),
            grid,
            args.tol,
            args.max_iter,
        )
        return result, time.perf_counter() - tick

    times: dict[str, list[float]] = {"ours": [], "ref": []}
    for r in range(args.repeats):  # A B B A …: background load hits both alike
        for side in ("ours", "ref") if r % 2 == 0 else ("ref", "ours"):
            if side == "ours":
                ours, seconds = run_ours()
            else:
                ref, seconds = run_ref()
            times[side].append(seconds)
            print(f"{side}: {seconds:.1f} s; {load()}", flush=True)
    ours_s, ref_s = min(times["ours"]), min(times["ref"])

    print(f"{'':12}{'seconds':>9}{'iterations':>12}{'chosen λ':>10}{'val top-1':>11}{'test':>8}")
    for name, m, s in (("lossxfer", ours, ours_s), ("scikit-learn", ref, ref_s)):
        print(
            f"{name:12}{s:9.1f}{m['sweep_iterations']:12d}{m['chosen']:10.3g}"
            f"{m['val_top1']:11.4f}{m['test_top1']:8.4f}"
        )
    print(f"speed-up: {ref_s / ours_s:.1f}×")
    print(f"test top-1 difference: {100 * (ours['test_top1'] - ref['test_top1']):+.2f} points")
    print(f"not converged (ours): {ours['sweep_not_converged']} of {args.grid} sweep points")


if __name__ == "__main__":
    main()
