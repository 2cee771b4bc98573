"""Class separation: R² against the all-pairs definition, the statistics around it, the verb."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import CliRun

from lossxfer.errors import InputError
from lossxfer.separation import SeparationConfig, run_separation
from lossxfer.store import LayerSpec, StoreWriter

DATASET = {"spec": "digits", "classes": [0, 1, 2], "label": "digits[0-2]"}
MODEL = {"arch": "smallcnn", "objective": "softmax", "objective_opts": {}, "seed": 0,
         "data": DATASET, "checkpoint_sha256": "0" * 64}  # fmt: skip


def write_store(path: Path, splits: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]) -> Path:
    """A store from numpy arrays: {split: (labels, {layer: rows})}, root attrs as extract."""
    attrs = {"arch": "smallcnn", "objective": "softmax", "model": MODEL, "dataset": DATASET}
    with StoreWriter(path, attrs) as w:
        for split, (labels, layers) in splits.items():
            specs = {k: LayerSpec(v.shape[1], (v.shape[1],), "none") for k, v in layers.items()}
            w.create_split(split, len(labels), specs)
            w.write(split, 0, labels, np.arange(len(labels)), layers)
    return path


def clustered(rng: np.random.Generator, sizes: list[int], dim: int, spread: float) -> tuple:
    """Class-structured rows of wildly different norms, classes of unequal size."""
    labels = np.repeat(np.arange(len(sizes)) * 3 + 2, sizes)  # labels 2, 5, 8, ...: not 0..K-1
    centres = rng.normal(size=(len(sizes), dim))
    x = centres[np.repeat(np.arange(len(sizes)), sizes)] + spread * rng.normal(
        size=(len(labels), dim)
    )
    x *= 10.0 ** rng.uniform(-3, 3, size=(len(labels), 1))
    perm = rng.permutation(len(labels))
    return labels[perm], x[perm].astype(np.float32)


def brute_r2(x: np.ndarray, labels: np.ndarray) -> tuple[float, float, float, dict[int, float]]:
    """docs/method.md §6 by its definition: mean (1 − cos) over all pairs, self-pairs included."""
    x = x.astype(np.float64)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1.0 - u @ u.T
    classes = np.unique(labels)
    block = np.array(
        [[dist[np.ix_(labels == a, labels == b)].mean() for b in classes] for a in classes]
    )
    per_class = {int(c): float(block[i, i]) for i, c in enumerate(classes)}
    d_within = float(np.mean(np.diag(block)))
    d_total = float(block.mean())
    return 1.0 - d_within / d_total, d_within, d_total, per_class


def measure(path: Path, **kw: object) -> dict:
    result = run_separation(SeparationConfig(store=str(path), **kw))  # type: ignore[arg-type]
    return result.metrics["layers"]


def test_r2_equals_all_pairs_definition(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels, x = clustered(rng, [7, 40, 90, 23], dim=12, spread=1.5)
    store = write_store(tmp_path / "a.h5", {"test": (labels, {"penultimate": x})})
    m = measure(store)["penultimate"]
    r2, d_within, d_total, per_class = brute_r2(x, labels)
    assert 0.05 < r2 < 0.95  # a non-trivial case
    assert m["r2"] == pytest.approx(r2, abs=1e-10)
    assert m["d_within"] == pytest.approx(d_within, abs=1e-10)
    assert m["d_total"] == pytest.approx(d_total, abs=1e-10)
    assert m["per_class_within"].keys() == {str(c) for c in per_class}
    for c, v in per_class.items():
        assert m["per_class_within"][str(c)] == pytest.approx(v, abs=1e-10)
    assert m["class_rows"] == {"2": 7, "5": 40, "8": 90, "11": 23}
    assert m["zero_rows"] == 0 and m["warnings"] == []


def test_block_size_does_not_change_anything(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels, x = clustered(rng, [30, 50, 41], dim=9, spread=2.0)
    x[::5, :4] = 0.0  # some sparsity for the zero statistics
    store = write_store(tmp_path / "a.h5", {"test": (labels, {"penultimate": x})})
    whole = measure(store, block_rows=4096)["penultimate"]
    for rows in (1, 7, 50):
        part = measure(store, block_rows=rows)["penultimate"]
        for key in ("r2", "d_within", "d_total", "sparsity", "effective_dim", "nc1"):
            assert part[key] == pytest.approx(whole[key], rel=1e-10, abs=1e-12), key


def test_one_direction_per_class_gives_r2_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    directions = rng.normal(size=(3, 8))
    labels = rng.integers(0, 3, size=60)
    x = directions[labels] * rng.uniform(0.1, 50, size=(60, 1))  # norms vary, direction fixed
    store = write_store(
        tmp_path / "a.h5", {"test": (labels, {"penultimate": x.astype(np.float32)})}
    )
    m = measure(store)["penultimate"]
    assert m["r2"] == pytest.approx(1.0, abs=1e-6)
    assert m["d_within"] == pytest.approx(0.0, abs=1e-6)


def test_random_labels_give_r2_near_zero(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    _, x = clustered(rng, [400, 400, 400], dim=10, spread=1.0)
    labels = rng.integers(0, 3, size=len(x))  # labels unrelated to the clusters
    store = write_store(tmp_path / "a.h5", {"test": (labels, {"penultimate": x})})
    assert abs(measure(store)["penultimate"]["r2"]) < 0.01


def test_nc1_participation_ratio_sparsity_dead_units_match_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    labels, x = clustered(rng, [25, 60, 15], dim=10, spread=1.0)
    x = np.maximum(x + 50.0 * np.abs(x).mean(), 0.0)  # large mean: tests the shifted accumulation
    x[rng.random(x.shape) < 0.3] = 0.0
    x[:, 3] = 0.0  # a dead unit
    x = x.astype(np.float32)
    store = write_store(tmp_path / "a.h5", {"test": (labels, {"penultimate": x})})
    m = measure(store, block_rows=17)["penultimate"]

    xd = x.astype(np.float64)
    cov = np.cov(xd, rowvar=False, bias=True)
    lam = np.linalg.eigvalsh(cov)
    assert m["effective_dim"] == pytest.approx(lam.sum() ** 2 / (lam**2).sum(), rel=1e-9)
    classes = np.unique(labels)
    means = np.stack([xd[labels == c].mean(axis=0) for c in classes])
    sw = sum(
        (xd[labels == c] - mu).T @ (xd[labels == c] - mu)
        for c, mu in zip(classes, means, strict=True)
    )
    sw = sw / len(xd)
    sb = np.cov(means, rowvar=False, bias=True)
    nc1 = np.trace(sw @ np.linalg.pinv(sb, hermitian=True)) / len(classes)
    assert m["nc1"] == pytest.approx(nc1, rel=1e-8)
    assert m["sparsity"] == pytest.approx(float((xd == 0).mean(axis=1).mean()), abs=1e-12)
    assert m["dead_units"] == int((~(xd != 0).any(axis=0)).sum()) == 1


def test_zero_rows_are_counted_and_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(5)
    labels, x = clustered(rng, [20, 30], dim=6, spread=1.0)
    x[[0, 4, 9]] = 0.0
    store = write_store(tmp_path / "a.h5", {"test": (labels, {"penultimate": x})})
    with caplog.at_level(logging.WARNING, logger="lossxfer"):
        m = measure(store)["penultimate"]
    keep = np.abs(x).sum(axis=1) > 0
    assert m["zero_rows"] == 3
    assert m["r2"] == pytest.approx(brute_r2(x[keep], labels[keep])[0], abs=1e-10)
    assert any("3 of 50 rows are all zeros" in w for w in m["warnings"])
    assert "all zeros" in caplog.text


def test_single_class_is_an_input_error(tmp_path: Path) -> None:
    x = np.random.default_rng(6).normal(size=(10, 4)).astype(np.float32)
    store = write_store(tmp_path / "a.h5", {"test": (np.full(10, 3), {"penultimate": x})})
    with pytest.raises(InputError, match=r"at least 2 classes"):
        measure(store)


def test_class_with_one_row_warns(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(11, 4)).astype(np.float32)
    labels = np.array([0] * 10 + [1])
    store = write_store(tmp_path / "a.h5", {"test": (labels, {"penultimate": x})})
    m = measure(store)["penultimate"]
    assert m["per_class_within"]["1"] == pytest.approx(0.0, abs=1e-12)
    assert m["r2"] == pytest.approx(brute_r2(x, labels)[0], abs=1e-10)
    assert any("class 1 has a single row" in w for w in m["warnings"])


def test_non_finite_rows_are_an_input_error(tmp_path: Path) -> None:
    x = np.ones((6, 3), np.float32)
    x[4, 1] = np.nan
    store = write_store(tmp_path / "a.h5", {"test": (np.arange(6) % 2, {"penultimate": x})})
    with pytest.raises(InputError, match=r"row 4 is not finite"):
        measure(store, block_rows=4)


def test_wide_layer_skips_covariance_statistics(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    labels, x = clustered(rng, [10, 10], dim=6, spread=1.0)
    store = write_store(tmp_path / "a.h5", {"test": (labels, {"penultimate": x})})
    m = measure(store, max_cov_dim=5)["penultimate"]
    assert m["effective_dim"] is None and m["nc1"] is None
    assert m["r2"] == pytest.approx(brute_r2(x, labels)[0], abs=1e-10)
    assert any("max_cov_dim" in w for w in m["warnings"])


def test_defaults_penultimate_and_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    la, xa = clustered(rng, [10, 12], dim=5, spread=1.0)
    lb, xb = clustered(rng, [8, 9], dim=5, spread=0.1)
    layers_a = {"block1": xa, "penultimate": xa[:, ::-1].copy()}
    layers_b = {"block1": xb, "penultimate": xb[:, ::-1].copy()}
    store = write_store(tmp_path / "a.h5", {"train": (la, layers_a), "test": (lb, layers_b)})
    result = run_separation(SeparationConfig(store=str(store)))
    assert result.metrics["split"] == "test"
    assert list(result.metrics["layers"]) == ["penultimate"]
    assert result.metrics["layers"]["penultimate"]["rows"] == 17
    assert result.model == MODEL and result.dataset == DATASET
    everything = run_separation(SeparationConfig(store=str(store), layers=("all",), split="train"))
    assert list(everything.metrics["layers"]) == ["block1", "penultimate"]


def test_cli_json_table_and_result_file(tmp_path: Path, cli: Callable[..., CliRun]) -> None:
    rng = np.random.default_rng(10)
    labels, x = clustered(rng, [15, 25, 20], dim=6, spread=1.0)
    store = write_store(
        tmp_path / "a.h5", {"test": (labels, {"penultimate": x, "logits": x[:, :3]})}
    )
    out = tmp_path / "sep.json"
    run = cli("separation", store, "--layer", "penultimate,logits", "--json", "-o", out)
    assert run.code == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["kind"] == "separation"
    assert set(doc["metrics"]["layers"]) == {"penultimate", "logits"}
    assert doc["metrics"]["layers"]["penultimate"]["r2"] == pytest.approx(brute_r2(x, labels)[0])
    assert json.loads(out.read_text())["metrics"] == doc["metrics"]
    assert cli("separation", store, "-o", out).code == 2  # refuses to overwrite
    table = cli("separation", store, "-o", out, "--force")
    assert table.code == 0 and "penultimate" in table.stdout and "R²" in table.stdout
    missing = cli("separation", store, "--layer", "nope")
    assert missing.code == 2 and "unknown layer 'nope'" in missing.stderr


def test_one_shared_direction_leaves_r2_undefined_with_a_warning(tmp_path: Path) -> None:
    v = np.array([1.0, 2.0, 0.0, -1.0])
    x = (v * np.arange(1, 13)[:, None]).astype(np.float32)  # every row along v
    store = write_store(tmp_path / "a.h5", {"test": (np.arange(12) % 2, {"penultimate": x})})
    m = measure(store)["penultimate"]
    assert m["r2"] is None and m["d_total"] == pytest.approx(0.0, abs=1e-12)
    assert any("R² undefined" in w for w in m["warnings"])
