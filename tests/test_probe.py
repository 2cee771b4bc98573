"""Probes: L-BFGS logistic regression against scikit-learn, ridge against its normal equations,
kNN against brute force, the validation protocol (choice, splits) and the verb."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CliRun
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from lossxfer.probe.common import Features, accuracies
from lossxfer.probe.knn import K_GRID, TEMPERATURE, VOTES, knn_predict
from lossxfer.probe.linear import LogisticProblem, lambda_grid, linear_sweep
from lossxfer.probe.ridge import ridge_spectrum
from lossxfer.probe.run import load_layer
from lossxfer.store import LayerSpec, StoreWriter, open_store

DATASET = {"spec": "digits", "classes": [0, 1, 2], "label": "digits[0-2]"}
MODEL = {"arch": "smallcnn", "objective": "softmax", "objective_opts": {}, "seed": 0,
         "data": DATASET, "checkpoint_sha256": "0" * 64}  # fmt: skip
LABELS = np.array([2, 5, 9])  # stored labels need not be 0..K-1


def blobs(n: int, dim: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian classes; `spread` small → linearly separable, large → overlapping."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, 3, n)
    centres = np.random.default_rng(99).normal(size=(3, dim)) * 2
    return centres[cls] + spread * rng.normal(size=(n, dim)) + 1.5, LABELS[cls]


def feats(x: np.ndarray, y: np.ndarray) -> Features:
    return Features(torch.from_numpy(x).double(), torch.from_numpy(y))


def write_store(path: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """A store with one layer, `penultimate`: {split: (rows, labels)}; index = 1000·split + i."""
    attrs = {"arch": "smallcnn", "objective": "softmax", "model": MODEL, "dataset": DATASET}
    with StoreWriter(path, attrs) as w:
        for s, (split, (x, y)) in enumerate(splits.items()):
            w.create_split(split, len(y), {"penultimate": LayerSpec(x.shape[1], x.shape[1:], "")})
            w.write(split, 0, y, 1000 * s + np.arange(len(y)), {"penultimate": x})
    return path


@pytest.mark.parametrize("spread", [0.3, 3.0], ids=["separable", "overlapping"])
@pytest.mark.parametrize("lam", [1e-1, 1e-3])
def test_logistic_matches_sklearn(spread: float, lam: float) -> None:
    x, y = blobs(240, 6, spread, seed=1)
    test_x, _ = blobs(400, 6, spread, seed=2)
    ours = LogisticProblem(feats(x, y)).solve(lam, tol=1e-8, max_iter=5000)
    ref = LogisticRegression(C=1 / (lam * len(y)), tol=1e-10, max_iter=20000).fit(x, y)
    assert ours.grad_max < 1e-6  # float64 resolves the loss to ~1e-14: no tighter in general
    assert ours.classes.tolist() == ref.classes_.tolist()
    scale = np.abs(ref.coef_).max()
    np.testing.assert_allclose(ours.theta[:, :-1].numpy(), ref.coef_, atol=1e-3 * scale)
    # intercepts: only their differences matter to the softmax (a common shift is free)
    shift = lambda b: b - b.mean()  # noqa: E731
    np.testing.assert_allclose(shift(ours.theta[:, -1].numpy()), shift(ref.intercept_), atol=1e-3)
    same = ours.predict(torch.from_numpy(test_x)).numpy() == ref.predict(test_x)
    assert same.mean() >= 0.99


def test_sweep_chooses_validation_argmax_and_refits() -> None:
    x, y = blobs(300, 5, 2.5, seed=3)
    fit, val = feats(x[:200], y[:200]), feats(x[200:], y[200:])
    test_x, test_y = blobs(300, 5, 2.5, seed=4)
    grid = lambda_grid(12, 1e-4, 1e2)
    assert grid[0] == 1e2 and grid[-1] == 1e-4 and lambda_grid(45, 1e-6, 1e5)[4] == 1e4
    out = linear_sweep(fit, val, fit.cat(val), feats(test_x, test_y), grid, tol=1e-8)
    curve = [p["val_top1"] for p in out["val_curve"]]
    assert [p["value"] for p in out["val_curve"]] == grid and grid[0] > grid[-1]
    best = max(curve)
    assert out["chosen"] == max(g for g, c in zip(grid, curve, strict=True) if c == best)
    assert out["val_top1"] == best and len(set(curve)) > 1  # the grid matters on this data
    for i in (0, len(grid) // 2, len(grid) - 1):  # curve values are sklearn's at the same C
        ref = LogisticRegression(C=1 / (grid[i] * 200), tol=1e-10, max_iter=10000)
        assert abs(ref.fit(x[:200], y[:200]).score(x[200:], y[200:]) - curve[i]) <= 1 / 100
    ref = LogisticRegression(C=1 / (out["chosen"] * 300), tol=1e-10, max_iter=10000).fit(x, y)
    assert abs(ref.score(test_x, test_y) - out["test_top1"]) <= 1 / 300
    assert out["chosen_sklearn_C"] == pytest.approx(1 / (out["chosen"] * 300))


def test_standardize_uses_fit_statistics_for_the_sweep_and_refit_ones_for_test() -> None:
    x, y = blobs(200, 4, 2.0, seed=11)
    x = x * np.array([1000.0, 1.0, 0.01, 5.0])  # wildly different feature scales
    test_x, test_y = blobs(100, 4, 2.0, seed=12)
    test_x = test_x * np.array([1000.0, 1.0, 0.01, 5.0])
    fit, val, test = feats(x[:150], y[:150]), feats(x[150:], y[150:]), feats(test_x, test_y)
    grid = lambda_grid(6, 1e-4, 1e1)
    ours = linear_sweep(fit, val, fit.cat(val), test, grid, tol=1e-8, standardize=True)

    def z(rows: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return (rows - ref.mean(0)) / ref.std(0)

    by_hand = linear_sweep(
        feats(z(x[:150], x[:150]), y[:150]),
        feats(z(x[150:], x[:150]), y[150:]),
        feats(z(x, x), y),
        feats(z(test_x, x), test_y),
        grid,
        tol=1e-8,
    )
    assert [p["val_top1"] for p in ours["val_curve"]] == [
        p["val_top1"] for p in by_hand["val_curve"]
    ]
    assert ours["chosen"] == by_hand["chosen"] and ours["test_top1"] == by_hand["test_top1"]


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_accuracies_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.choice([3, 4, 8], size=50, p=[0.7, 0.2, 0.1])
    pred = np.where(rng.random(50) < 0.6, y, rng.choice([3, 4, 8, 11], size=50))
    top1, per_class = accuracies(torch.from_numpy(pred), torch.from_numpy(y))
    assert top1 == pytest.approx(accuracy_score(y, pred))
    assert per_class == pytest.approx(balanced_accuracy_score(y, pred))


@pytest.mark.parametrize("dim", [4, 40], ids=["covariance", "gram"])
def test_ridge_matches_normal_equations(dim: int) -> None:
    x, y = blobs(30, dim, 2.0, seed=5)
    new_x, _ = blobs(20, dim, 2.0, seed=6)
    t = (y[:, None] == LABELS).astype(float)
    xc, tc = x - x.mean(0), t - t.mean(0)
    spectrum = ridge_spectrum(feats(x, y))
    projected = spectrum.project(torch.from_numpy(new_x))
    for lam in (1e-3, 1e-1, 10.0):
        w = np.linalg.solve(xc.T @ xc / len(y) + lam * np.eye(dim), xc.T @ tc / len(y))
        ref = LABELS[((new_x - x.mean(0)) @ w + t.mean(0)).argmax(1)]
        assert (spectrum.predict(projected, lam).numpy() == ref).all()


def brute_force_knn(ref_x: np.ndarray, ref_y: np.ndarray, q: np.ndarray, vote: str, k: int):
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    sims = unit(q) @ unit(ref_x).T
    classes = np.unique(ref_y)
    out = []
    for row in sims:
        top = np.argsort(-row)[:k]
        weights = np.exp(row[top] / TEMPERATURE) if vote == "weighted" else np.ones(k)
        tally = np.array([weights[ref_y[top] == c].sum() for c in classes])
        out.append(classes[np.flatnonzero(tally == tally.max())[0]])  # tie → lowest label
    return np.array(out)


def test_knn_matches_brute_force() -> None:
    ref_x, ref_y = blobs(230, 8, 3.0, seed=7)
    q, _ = blobs(45, 8, 3.0, seed=8)
    candidates = [(v, k) for v in VOTES for k in K_GRID]
    # a tiny budget forces many query blocks
    ours = knn_predict(feats(ref_x, ref_y), torch.from_numpy(q), candidates, budget=230 * 7)
    for vote, k in candidates:
        kk = min(k, len(ref_y))
        expected = brute_force_knn(ref_x, ref_y, q, vote, kk)
        assert (ours[(vote, k)].numpy() == expected).all(), (vote, k)


@pytest.mark.parametrize("with_val", [False, True])
def test_protocol_rows_never_overlap(tmp_path: Path, with_val: bool) -> None:
    def rows(n: int, start: int) -> tuple[np.ndarray, np.ndarray]:  # column 0 = a unique id
        ids = np.arange(start, start + n, dtype=np.float32)
        return np.stack([ids, np.ones(n, np.float32)], 1), np.arange(n) % 3

    splits = {"train": rows(100, 0), "test": rows(40, 1000)}
    if with_val:
        splits["val"] = rows(30, 500)
    with open_store(write_store(tmp_path / "s.h5", splits)) as store:
        load = lambda: load_layer(  # noqa: E731
            store, "penultimate", 0.25, 1, torch.device("cpu"), torch.float64
        )
        (fit, val, refit, test), source = load()
        (_, again, _, _), _ = load()
    ids = {
        name: set(f.x[:, 0].tolist())
        for name, f in zip("fvrt", (fit, val, refit, test), strict=True)
    }
    assert not ids["f"] & ids["v"] and not (ids["f"] | ids["v"]) & ids["t"]
    assert ids["r"] == ids["f"] | ids["v"] and len(refit) == len(fit) + len(val)
    assert ids["t"] == set(range(1000, 1040))
    if with_val:
        assert source == "val split" and ids["v"] == set(range(500, 530))
    else:
        assert source == "held out from train"
        assert torch.equal(val.x, again.x) and len(val) == 24  # seeded; 34, 33, 33 rows → 8 each
        assert ids["f"] | ids["v"] == set(range(100))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    x, y = blobs(160, 6, 2.0, seed=9)
    return write_store(
        tmp_path / "acts.h5",
        {"train": (x[:90], y[:90]), "val": (x[90:120], y[90:120]), "test": (x[120:], y[120:])},
    )


@pytest.mark.slow
def test_cli_probe_json_record_and_table(store: Path, cli: Callable[..., CliRun]) -> None:
    out = store.parent / "probe.json"
    run = cli("probe", store, "--method", "all", "--grid", "6", "--json", "-q", "-o", out)
    assert run.code == 0, run.stderr
    doc = json.loads(run.stdout)
    assert json.loads(out.read_text())["metrics"] == doc["metrics"]
    assert doc["kind"] == "probe" and doc["model"] == MODEL and doc["dataset"] == DATASET
    layer = doc["metrics"]["layers"]["penultimate"]
    assert set(layer) == {"linear", "ridge", "knn"}
    for m in layer.values():
        assert 0.5 < m["test_top1"] <= 1 and 0 <= m["test_mean_per_class"] <= 1
        assert m["val_top1"] == max(p["val_top1"] for p in m["val_curve"])
    assert (
        len(layer["linear"]["val_curve"]) == 6 and "lambda" in layer["linear"]["grid_parametrises"]
    )
    assert doc["metrics"]["rows"] == {"fit": 90, "val": 30, "refit": 120, "test": 40}
    again = cli("probe", store, "-o", out)
    assert again.code == 2 and "--force" in again.stderr
    table = cli("probe", store, "--grid", "3")
    assert table.code == 0 and "linear" in table.stdout and "knn" in table.stdout
    assert "ridge" not in table.stdout  # default: linear and knn


def test_cli_bad_options_exit_2(store: Path, cli: Callable[..., CliRun]) -> None:
    for args, message in (
        (["--grid-range", "1e-3"], "--grid-range"),
        (["--grid-range", "1,0.1"], "--grid-range"),
        (["--method", "linaer"], "--method: unknown method 'linaer' (did you mean 'linear'?)"),
    ):
        run = cli("probe", store, *args)
        assert run.code == 2, args
        assert run.stderr.startswith(f"lossxfer: error: {message}"), run.stderr


def test_cli_bad_stores_exit_3(tmp_path: Path, cli: Callable[..., CliRun]) -> None:
    x, y = blobs(60, 4, 1.0, seed=10)
    nan = x.astype(np.float32).copy()
    nan[3, 1] = np.nan
    cases = {
        "no test split": ({"train": (x, y)}, "'test'"),
        "NaN": ({"train": (nan, y), "test": (x, y)}, "NaN"),
        "one class": ({"train": (x, np.full(60, 4)), "test": (x, y)}, "fewer than 2 classes"),
    }
    for name, (splits, reason) in cases.items():
        path = write_store(tmp_path / f"{name}.h5", splits)
        run = cli("probe", path, "--grid", "2")
        assert run.code == 3, (name, run.stderr)
        assert reason in run.stderr and str(path) in run.stderr
