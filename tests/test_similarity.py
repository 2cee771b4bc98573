"""CKA on arrays (lossxfer.cka, cka_matrix, CkaAccumulator, minibatch_cka): the Gram formulas of
docs/method.md §5, CKA's invariants, the CLI's numbers, shards and the mixed-precision bound."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cka import brute, minibatch_brute, net_layers, write_store

import lossxfer
from lossxfer.errors import UsageError
from lossxfer.similarity import CkaAccumulator, CkaResult, cka, cka_matrix, minibatch_cka

EXACT = ("linear", "debiased", "rbf")


def centred(x: np.ndarray) -> np.ndarray:
    """float64 columns about their mean: the brute-force Grams then keep every digit."""
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(0)


@st.composite
def pairs(draw: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two related activation matrices of n rows (post-ReLU, possibly offset)."""
    n = draw(st.integers(6, 40))
    p, q = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    offset = draw(st.sampled_from([0.0, 3.0, 100.0]))
    x = np.maximum(rng.normal(size=(n, p)), 0) + offset
    y = x @ rng.normal(size=(p, q)) + rng.normal(size=(n, q)) * draw(st.sampled_from([0.1, 1.0]))
    return x, y


@settings(max_examples=40, deadline=None)
@given(data=pairs(), estimator=st.sampled_from(EXACT))
def test_agrees_with_the_gram_formulas(data: tuple[np.ndarray, np.ndarray], estimator: str) -> None:
    x, y = data
    expected = brute([centred(x)], [centred(y)], estimator)[0, 0]
    got = cka(x, y, estimator)
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(data=pairs(), estimator=st.sampled_from(EXACT), seed=st.integers(0, 1000))
def test_invariants(data: tuple[np.ndarray, np.ndarray], estimator: str, seed: int) -> None:
    """Symmetric; 1 for identical inputs; unchanged by orthogonal maps and isotropic scaling."""
    x, y = data
    value = cka(x, y, estimator)
    if np.isnan(value):
        return
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
    assert cka(y, x, estimator) == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert cka(x @ q, y, estimator) == pytest.approx(value, rel=1e-7, abs=1e-9)
    assert cka(x, 7.5 * y, estimator) == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert cka(x, x, estimator) == pytest.approx(1.0, rel=1e-12)


def test_matrix_of_layers_and_minibatch_are_the_reference_formulas() -> None:
    a, b = net_layers(83, seed=1), net_layers(83, seed=2)
    xs, ys = [centred(v) for v in a.values()], [centred(v) for v in b.values()]
    for estimator in EXACT:
        result = cka_matrix(a, b, estimator, block_rows=16)  # 83 = 5 × 16 + 3
        assert result.layers_a == list(a) and result.layers_b == list(b)
        np.testing.assert_allclose(result.matrix, brute(xs, ys, estimator), rtol=1e-9)
        assert result["block2", "logits"] == result.matrix[1, 2]
    batches = [np.arange(i, min(i + 20, 83)) for i in range(0, 83, 20)]  # the last has 3 rows
    got = minibatch_cka(({k: v[i] for k, v in a.items()}, {k: v[i] for k, v in b.items()})
                        for i in batches[:-1])  # fmt: skip
    np.testing.assert_allclose(got.matrix, minibatch_brute(xs, ys, batches[:-1]), rtol=1e-9)
    assert got.extra["batches"] == 4
    self_only = cka_matrix(a, None, "debiased")
    assert self_only.layers_b == list(a)
    np.testing.assert_allclose(np.diag(self_only.matrix), 1.0, rtol=1e-12)


@pytest.mark.parametrize("estimator", ["linear", "debiased", "minibatch", "rbf"])
def test_merge_of_shards_equals_one_pass(estimator: str) -> None:
    a, b = net_layers(97, seed=3, offset=50.0), net_layers(97, seed=4)
    cuts = [0, 24, 40, 73, 97]
    whole = CkaAccumulator(estimator)
    parts = []
    for lo, hi in itertools.pairwise(cuts):
        block_a = {k: v[lo:hi] for k, v in a.items()}
        block_b = {k: v[lo:hi] for k, v in b.items()}
        whole.update(block_a, block_b)
        part = CkaAccumulator(estimator, shift=whole.shift)
        parts.append(part.update(block_a, block_b))
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    assert merged.rows == whole.rows == 97
    np.testing.assert_allclose(merged.result().matrix, whole.result().matrix, rtol=1e-13)


def test_merge_refuses_parts_of_different_computations() -> None:
    x = np.random.default_rng(0).normal(size=(20, 3)) + 10
    first = CkaAccumulator("debiased").update(x[:10], x[:10, :2])
    with pytest.raises(ValueError, match=r"shift=first\.shift"):
        first.merge(CkaAccumulator("debiased").update(x[10:], x[10:, :2]))
    with pytest.raises(ValueError, match="differ in estimator"):
        first.merge(CkaAccumulator("linear", shift=first.shift).update(x[10:], x[10:, :2]))
    with pytest.raises(ValueError, match="call update first"):
        first.merge(CkaAccumulator("debiased"))


def test_bad_input_is_refused_with_one_clear_message() -> None:
    x = np.ones((10, 3))
    with pytest.raises(UsageError, match="did you mean 'debiased'"):
        CkaAccumulator("debiassed")
    with pytest.raises(UsageError, match="did you mean 'mixed'"):
        cka(x, x, precision="mix")
    with pytest.raises(ValueError, match="applies to linear and debiased"):
        CkaAccumulator("rbf", precision="mixed")
    bad = np.random.default_rng(0).normal(size=(10, 3))
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        cka(bad, x)
    with pytest.raises(ValueError, match="same number of rows"):
        CkaAccumulator().update(x, x[:5])
    with pytest.raises(ValueError, match="at least 4 rows"):
        cka(x[:3], x[:3])
    acc = CkaAccumulator().update({"a": x})
    with pytest.raises(ValueError, match="layers differ"):
        acc.update({"b": x})
    with pytest.raises(ValueError, match="widths differ"):
        acc.update({"a": x[:, :2]})
    assert np.isnan(cka(x, np.random.default_rng(1).normal(size=(10, 2))))  # constant: undefined


@pytest.mark.parametrize("offset", [0.0, 3.0, 100.0])
@pytest.mark.parametrize("precision", ["exact", "mixed"])
def test_a_self_hsic_that_is_zero_up_to_rounding_is_undefined(
    offset: float, precision: str
) -> None:
    """One nonzero row: HSIC₁(K, K) is exactly 0 (it is translation-invariant), so debiased CKA
    is undefined; the streamed sums leave rounding noise of ~1e-16 of the terms, which must give
    NaN, not a ratio of rounding errors (hypothesis found this at n = 6, ~1e-8 returned)."""
    x = np.zeros((6, 1)) + offset
    x[2, 0] += 0.58569354
    y = np.random.default_rng(3).normal(size=(6, 2))
    assert np.isnan(brute([x], [y], "debiased")[0, 0])  # the reference agrees
    assert np.isnan(cka(x, y, "debiased", precision=precision))
    assert np.isnan(cka_matrix({"x": x}, {"y": y}, "debiased", precision=precision).matrix[0, 0])
    # a small but real self-HSIC (a second nonzero row) stays defined: ~1e-6 of its terms' size
    # in float64, ~1e-2 in mixed precision (whose products keep ~7 digits)
    x[4, 0] += 1e-3 if precision == "exact" else 0.1
    expected = brute([centred(x)], [centred(y)], "debiased")[0, 0]
    assert not np.isnan(expected)
    tol = 1e-4 if precision == "mixed" else 1e-9
    assert cka(x, y, "debiased", precision=precision) == pytest.approx(expected, rel=tol)


def test_minibatch_self_hsic_zero_up_to_rounding_is_undefined() -> None:
    """Each minibatch of 6 holds one nonzero row of x: every HSIC₁(Kᵢ, Kᵢ) is exactly 0 and so is
    their sum; minibatch CKA is undefined (it returned rounding noise: 0.026, 2e-17, 0.004)."""
    rng = np.random.default_rng(0)
    for offset in (0.0, 3.0, 100.0):
        x = np.zeros((12, 1)) + offset
        x[2, 0] += 0.58569354
        x[8, 0] += 0.3
        y = rng.normal(size=(12, 2))
        assert np.isnan(minibatch_brute([x], [y], [np.arange(6), np.arange(6, 12)])[0, 0])
        assert np.isnan(cka(x, y, "minibatch", batch_size=6))
        # one batch of 12 holds both rows: defined, and equal to debiased CKA
        expected = brute([centred(x)], [centred(y)], "debiased")[0, 0]
        assert cka(x, y, "minibatch", batch_size=12) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("width", [1, 5, 16, 37])
def test_upper_to_full_mirrors_the_upper_triangle(width: int) -> None:
    """Blocked (step 8 here: several blocks and a partial one) and exact: copies, no arithmetic."""
    from lossxfer.similarity.estimators import upper_to_full

    g = np.asfortranarray(np.random.default_rng(width).normal(size=(width, width)))
    full = upper_to_full(g, step=8)
    np.testing.assert_array_equal(full, np.triu(g) + np.triu(g, 1).T)
    np.testing.assert_array_equal(
        g, np.asfortranarray(np.random.default_rng(width).normal(size=(width, width)))
    )


def test_torch_tensors_give_the_numpy_numbers() -> None:
    torch = pytest.importorskip("torch")
    x, y = net_layers(50, seed=5)["block2"], net_layers(50, seed=6)["block1"]
    for estimator in ("linear", "debiased", "minibatch", "rbf"):
        expected = cka(x, y, estimator, batch_size=16)
        got = cka(torch.from_numpy(x), torch.from_numpy(y), estimator, batch_size=16)
        assert got == pytest.approx(expected, rel=1e-12)
    conv = torch.from_numpy(x[:, :12].reshape(50, 3, 2, 2))  # conv maps are flattened
    assert cka(conv, y) == pytest.approx(cka(x[:, :12], y), rel=1e-12)


def test_api_equals_the_cli_and_the_record_round_trips(tmp_path: Path, cli: Any) -> None:
    a, b = net_layers(61, seed=1, offset=100.0), net_layers(61, seed=2)
    store_a, store_b = write_store(tmp_path / "a.h5", a), write_store(tmp_path / "b.h5", b)
    for estimator in ("linear", "debiased", "rbf"):
        for precision in ("exact", "mixed") if estimator != "rbf" else ("exact",):
            run = cli("cka", store_a, store_b, "--estimator", estimator, "--precision",
                      precision, "--json")  # fmt: skip
            assert run.code == 0, run.stderr
            record = json.loads(run.stdout)
            api = cka_matrix(a, b, estimator, precision=precision)
            np.testing.assert_allclose(record["metrics"]["matrix"], api.matrix, rtol=1e-12)
            assert record["metrics"]["precision"] == precision
            back = CkaResult.from_dict(record["metrics"])
            np.testing.assert_array_equal(back.matrix, np.array(record["metrics"]["matrix"]))
            assert back.extra["model_b"]["objective"] == "softmax"
    assert lossxfer.cka is cka and lossxfer.CkaResult is CkaResult


@pytest.mark.parametrize("estimator", ["linear", "debiased"])
@pytest.mark.parametrize(
    "case", ["relu_offset_100", "near_collinear", "one_column", "ragged_blocks"]
)
def test_mixed_precision_is_within_its_bound_on_adversarial_data(estimator: str, case: str) -> None:
    """docs/method.md §5: |ΔCKA| ≤ 1e-6 against the exact path, on data built to lose digits."""
    rng = np.random.default_rng(7)
    n = 20_011  # prime: no block size divides it
    z = rng.normal(size=(n, 16))
    x = np.maximum(z @ rng.normal(size=(16, 64)), 0)
    y = np.maximum(z[:, :8] @ rng.normal(size=(8, 32)) + 0.5 * rng.normal(size=(n, 32)), 0)
    if case == "relu_offset_100":
        x, y = x + 100.0, y + 100.0
    elif case == "near_collinear":
        y = x @ (np.eye(64) + 1e-4 * rng.normal(size=(64, 64))) + 100.0
    elif case == "one_column":
        x, y = x[:, :1] + 100.0, y[:, :1] + 100.0
    layers_a = {"x": x.astype(np.float32)}
    layers_b = {"y": y.astype(np.float32)}
    block = 4099 if case == "ragged_blocks" else 16384
    exact = cka_matrix(layers_a, layers_b, estimator, block_rows=block).value
    mixed = cka_matrix(layers_a, layers_b, estimator, precision="mixed", block_rows=block).value
    assert 0 < abs(mixed - exact) <= 1e-6, (exact, mixed)  # 0: the float32 path did not run


def test_memory_is_flat_in_rows_without_an_n_by_n_gram() -> None:
    """20,000 rows: an n × n float64 Gram alone would be 3.2 GB; the sums are O(p²)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 48)).astype(np.float32)
    y = (x[:, :16] + rng.normal(size=(20_000, 16))).astype(np.float32)
    tracemalloc.start()
    try:
        value = cka(x, y, "debiased")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0 < value < 1
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_read_ahead_passes_items_errors_and_stops_with_its_consumer() -> None:
    import threading

    from lossxfer.similarity.run import prefetch

    assert list(prefetch(iter(range(5)))) == [0, 1, 2, 3, 4]

    def failing() -> Any:
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetch(failing()))
    produced: list[int] = []

    def endless() -> Any:
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    for item in prefetch(endless()):
        if item == 3:
            break
    assert len(produced) <= 6  # read ahead by one, then stopped
    assert not any(t.name == "lossxfer-cka-read" for t in threading.enumerate())


def test_mixed_blocks_are_one_float32_product() -> None:
    """Automatic blocks in mixed precision never exceed MIXED_ROWS (a block just over it would be
    split into two half-size float32 products); exact blocks keep the memory-sized rows."""
    from lossxfer.similarity.api import BLOCK_BYTES, auto_block_rows
    from lossxfer.similarity.estimators import MIXED_ROWS

    width = 8064  # two stores of 64…2048-wide layers: 4161 float64 rows in BLOCK_BYTES
    assert auto_block_rows(width) == BLOCK_BYTES // (8 * width) > MIXED_ROWS
    assert auto_block_rows(width, "mixed") == MIXED_ROWS
    assert auto_block_rows(100_000, "mixed") == auto_block_rows(100_000) < MIXED_ROWS
