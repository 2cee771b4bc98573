"""CKA against brute-force float64 Gram formulas written here from docs/method.md §5."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from lossxfer.errors import DeviceError, InputError, UsageError
from lossxfer.similarity import CkaConfig, compute_shard, merge_shards, run_cka, write_shard
from lossxfer.similarity.run import batch_plan
from lossxfer.store import LayerSpec, StoreWriter

# -- brute force (docs/method.md §5), float64, n × n Grams ---------------------------------------


def gram(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x @ x.T


def hsic_biased(k: np.ndarray, g: np.ndarray) -> float:
    """tr(KHLH), L written g."""
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ g @ h))


def hsic_unbiased(k: np.ndarray, g: np.ndarray) -> float:
    """Song et al. (2012) HSIC₁ with zeroed diagonals (K̃ = k, L̃ = g)."""
    n = len(k)
    k, g = k.copy(), g.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(g, 0.0)
    one = np.ones(n)
    return float(
        (
            np.trace(k @ g)
            + (one @ k @ one) * (one @ g @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ k @ g @ one)
        )
        / (n * (n - 3))
    )


def rbf_gram(x: np.ndarray, threshold: float) -> np.ndarray:
    """Kornblith et al.'s demo: σ² = threshold² × median of all squared distances."""
    x = np.asarray(x, dtype=np.float64)
    dot = x @ x.T
    sq = np.diag(dot)
    d2 = sq[:, None] + sq[None, :] - 2 * dot
    return np.exp(-d2 / (2 * threshold**2 * np.median(d2)))


def self_hsic(k: np.ndarray, hsic) -> float:  # type: ignore[no-untyped-def]
    """HSIC(K, K), or 0 where it is below 1e-12 of the sum of its terms' sizes: the exact
    value is then 0 (e.g. one nonzero row: HSIC₁ is translation-invariant) and CKA undefined."""
    a = np.abs(k)
    if hsic is hsic_unbiased:
        n, one = len(k), np.ones(len(k))
        np.fill_diagonal(a, 0.0)
        scale = (np.trace(a @ a) + (one @ a @ one) ** 2 / ((n - 1) * (n - 2))
                 + 2.0 / (n - 2) * (one @ a @ a @ one)) / (n * (n - 3))  # fmt: skip
    else:
        scale = float((a * a).sum())
    value = hsic(k, k)
    return 0.0 if abs(value) <= 1e-12 * scale else value


def cka(k: np.ndarray, g: np.ndarray, hsic) -> float:  # type: ignore[no-untyped-def]
    """HSIC(K, L) / √(HSIC(K, K) HSIC(L, L)); NaN where a self-HSIC is not positive."""
    kk, gg = self_hsic(k, hsic), self_hsic(g, hsic)
    return hsic(k, g) / np.sqrt(kk * gg) if kk > 0 and gg > 0 else float("nan")


def minibatch_brute(
    xs: list[np.ndarray], ys: list[np.ndarray], batches: list[np.ndarray], centre: bool = False
) -> np.ndarray:
    """Σ_batches HSIC₁(Kᵢ, Lᵢ) / √(Σ HSIC₁(Kᵢ, Kᵢ) Σ HSIC₁(Lᵢ, Lᵢ)) — a ratio of sums.

    `centre` subtracts each batch's column mean first (HSIC₁ is unchanged; digits are kept).
    """

    def rows(x: np.ndarray, i: np.ndarray) -> np.ndarray:
        return x[i] - x[i].mean(0) if centre else x[i]

    def total(x: np.ndarray, y: np.ndarray) -> float:
        return sum(hsic_unbiased(gram(rows(x, i)), gram(rows(y, i))) for i in batches)

    def own(x: np.ndarray) -> float:  # each batch's self-HSIC with the rounding rule of cka()
        return sum(self_hsic(gram(rows(x, i)), hsic_unbiased) for i in batches)

    def ratio(x: np.ndarray, y: np.ndarray) -> float:
        xx, yy = own(x), own(y)
        return total(x, y) / np.sqrt(xx * yy) if xx > 0 and yy > 0 else float("nan")

    return np.array([[ratio(x, y) for y in ys] for x in xs])


def brute(xs: list[np.ndarray], ys: list[np.ndarray], kind: str, threshold: float = 0.5):  # type: ignore[no-untyped-def]
    kernel = (lambda x: rbf_gram(x, threshold)) if kind == "rbf" else gram
    hsic = hsic_unbiased if kind == "debiased" else hsic_biased
    return np.array([[cka(kernel(x), kernel(y), hsic) for y in ys] for x in xs])


# -- stores built directly from arrays ---------------------------------------------------------


def write_store(
    path: Path,
    layers: dict[str, np.ndarray],
    index: np.ndarray | None = None,
    objective: str = "softmax",
) -> Path:
    n = len(next(iter(layers.values())))
    model = {"arch": "smallcnn", "objective": objective, "objective_opts": {}, "seed": 0}
    attrs = {
        "arch": "smallcnn",
        "objective": objective,
        "objective_opts": "{}",
        "model": model,
        "dataset": {"spec": "synthetic", "label": "synthetic"},
        "data": "synthetic",
        "pool": "avg",
        "transform": "none",
    }
    specs = {k: LayerSpec(v.shape[1], (v.shape[1],), "avg") for k, v in layers.items()}
    with StoreWriter(path, attrs) as w:
        w.create_split("test", n, specs)
        idx = np.arange(n) if index is None else index
        w.write("test", 0, np.zeros(n, dtype=np.int64), idx, layers)
    return path


def net_layers(n: int, seed: int, offset: float = 0.0) -> dict[str, np.ndarray]:
    """Three related layers of different widths, like a small network's (post-ReLU) features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    h1 = np.maximum(x @ rng.normal(size=(6, 9)), 0)
    h2 = np.maximum(h1 @ rng.normal(size=(9, 13)) + 0.5 * rng.normal(size=(n, 13)), 0)
    out = h2 @ rng.normal(size=(13, 4))
    return {
        k: (v + offset).astype(np.float32)
        for k, v in {"block1": h1, "block2": h2, "logits": out}.items()
    }


def as64(layers: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [v.astype(np.float64) for v in layers.values()]


def matrix(result) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array(result.metrics["matrix"], dtype=np.float64)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    a, b = net_layers(61, seed=1), net_layers(61, seed=2)
    b["penultimate"] = a["block2"][:, :7] + 0.1  # related to A, so values are not all ≈ 0
    return (
        write_store(tmp_path / "a.h5", a),
        write_store(tmp_path / "b.h5", b, objective="cosine_softmax"),
        a,
        b,
    )


# -- estimators against the Gram formulas ------------------------------------------------------


@pytest.mark.parametrize("estimator", ["linear", "debiased", "rbf"])
def test_one_store_matches_gram_formulas(tmp_path: Path, estimator: str) -> None:
    layers = net_layers(57, seed=0)
    path = write_store(tmp_path / "a.h5", layers)
    result = run_cka(CkaConfig(str(path), estimator=estimator, backend="numpy"))
    expected = brute(as64(layers), as64(layers), estimator)
    np.testing.assert_allclose(matrix(result), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.diag(matrix(result)), 1.0, rtol=1e-12)  # CKA(X, X) = 1
    assert result.metrics["layers_a"] == result.metrics["layers_b"] == list(layers)


@pytest.mark.parametrize("estimator", ["linear", "debiased", "rbf"])
def test_two_stores_match_gram_formulas(pair, estimator: str) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, a, b = pair
    config = CkaConfig(str(path_a), str(path_b), estimator=estimator, backend="numpy")
    result = run_cka(config)
    expected = brute(as64(a), as64(b), estimator)
    assert expected.min() < 0.9 and expected.max() > 0.3  # a matrix with something in it
    np.testing.assert_allclose(matrix(result), expected, rtol=1e-9, atol=1e-12)
    assert result.metrics["layers_b"] == list(b)
    assert result.metrics["model_b"]["objective"] == "cosine_softmax"
    assert result.model["objective"] == "softmax"


def test_layer_selection(pair) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, a, b = pair
    config = CkaConfig(
        str(path_a), str(path_b), layers_a=("logits", "block1"), layers_b=("penultimate",)
    )
    result = run_cka(config)
    expected = brute([a["logits"], a["block1"]], [b["penultimate"]], "linear")
    np.testing.assert_allclose(matrix(result), expected, rtol=1e-9)
    with pytest.raises(UsageError, match="unknown layer 'nope'"):
        run_cka(CkaConfig(str(path_a), layers_a=("nope",)))
    # one store: rows and columns are both A's layers, and may differ
    for estimator in ("debiased", "rbf"):
        one = CkaConfig(str(path_a), layers_a=("logits",), layers_b=("block2", "logits"))
        got = matrix(run_cka(dataclasses.replace(one, estimator=estimator)))
        expected = brute([a["logits"]], [a["block2"], a["logits"]], estimator)
        np.testing.assert_allclose(got, expected, rtol=1e-9)


@pytest.mark.parametrize("passes", [1, 2])
def test_minibatch_is_ratio_of_summed_per_batch_hsic(pair, passes: int) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, a, b = pair
    m, seed = 9, 3
    # small blocks: several groups of batches are read, and rows come from several blocks
    config = CkaConfig(
        str(path_a),
        str(path_b),
        estimator="minibatch",
        batch_size=m,
        passes=passes,
        seed=seed,
        block_rows=20,
    )
    result = run_cka(config)
    batches = batch_plan(61, m, passes, seed)
    assert sorted(len(x) for x in batches) == [7] * passes + [9] * 6 * passes  # 7-row tail kept
    xs, ys = as64(a), as64(b)
    expected = minibatch_brute(xs, ys, batches)
    np.testing.assert_allclose(matrix(result), expected, rtol=1e-9)
    assert result.metrics["batches"] == len(batches)
    mean_of_ratios = np.mean(
        [
            hsic_unbiased(gram(xs[0][i]), gram(ys[0][i]))
            / np.sqrt(
                hsic_unbiased(gram(xs[0][i]), gram(xs[0][i]))
                * hsic_unbiased(gram(ys[0][i]), gram(ys[0][i]))
            )
            for i in batches
        ]
    )
    assert abs(mean_of_ratios - expected[0, 0]) > 1e-6  # the test tells the two apart


def test_batch_plan_covers_each_pass_and_is_seeded() -> None:
    plan = batch_plan(50, 10, 2, seed=7)
    first, second = np.concatenate(plan[:5]), np.concatenate(plan[5:])
    assert sorted(first) == sorted(second) == list(range(50))
    assert all(np.all(np.diff(b) > 0) for b in plan)
    assert not np.array_equal(first, second)
    assert all(
        np.array_equal(p, q) for p, q in zip(plan, batch_plan(50, 10, 2, seed=7), strict=True)
    )
    assert [len(b) for b in batch_plan(11, 4, 1, 0)] == [4, 4]  # a 3-row tail is left out


@pytest.mark.parametrize("estimator", ["linear", "debiased", "minibatch", "rbf"])
def test_invariant_to_orthogonal_transform_and_isotropic_scaling(
    tmp_path: Path, estimator: str
) -> None:
    layers = net_layers(64, seed=4)
    q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(13, 13)))
    moved = {**layers, "block2": (layers["block2"].astype(np.float64) @ q * 7.5).astype(np.float32)}
    one = write_store(tmp_path / "one.h5", layers)
    two = write_store(tmp_path / "two.h5", moved)
    config = CkaConfig(str(one), estimator=estimator, batch_size=16)
    base = matrix(run_cka(config))
    turned = matrix(run_cka(dataclasses.replace(config, store_a=str(two))))
    np.testing.assert_allclose(turned, base, rtol=1e-5, atol=1e-6)  # float32 storage of XQ


def test_debiased_independent_data_is_near_zero_and_may_be_negative(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(80, 30)), rng.normal(size=(80, 20))
    path = write_store(tmp_path / "ind.h5", {"x": x.astype(np.float32), "y": y.astype(np.float32)})
    got = matrix(run_cka(CkaConfig(str(path), estimator="debiased")))[0, 1]
    expected = cka(gram(x.astype(np.float32)), gram(y.astype(np.float32)), hsic_unbiased)
    assert expected < 0  # this seed's estimate is negative; it must be reported as it is
    assert got == pytest.approx(expected, rel=1e-9)
    assert abs(got) < 0.05
    biased = matrix(run_cka(CkaConfig(str(path), estimator="linear")))[0, 1]
    assert biased > 0.1  # the biased estimator's known positive bias at n = 80


@pytest.mark.parametrize("estimator", ["linear", "debiased", "minibatch"])
def test_float32_with_large_offset_gives_the_float64_answer(tmp_path: Path, estimator: str) -> None:
    layers = net_layers(96, seed=6, offset=100.0)  # post-ReLU-like, +100: float32 Grams fail here
    path = write_store(tmp_path / "off.h5", layers)
    result = matrix(run_cka(CkaConfig(str(path), estimator=estimator, batch_size=32)))
    # reference: the float64 formulas on exactly centred float32 values (CKA is unchanged)
    if estimator == "minibatch":
        xs = as64(layers)
        expected = minibatch_brute(xs, xs, batch_plan(96, 32, 1, 0), centre=True)
    else:
        xs = [x - x.mean(0) for x in as64(layers)]
        expected = brute(xs, xs, estimator)
    np.testing.assert_allclose(result, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("estimator", ["linear", "debiased"])
def test_block_size_does_not_change_the_answer(pair, estimator: str) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, _, _ = pair
    results = [
        matrix(run_cka(CkaConfig(str(path_a), str(path_b), estimator=estimator, block_rows=rows)))
        for rows in (1, 7, 61)
    ]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=1e-12, atol=1e-14)


# -- shards ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("estimator", "suffix", "precision"),
    [
        ("linear", ".h5", "exact"),
        ("debiased", ".json", "exact"),
        ("minibatch", ".h5", "exact"),
        ("debiased", ".h5", "mixed"),
    ],
)
def test_shards_merge_to_the_unsharded_result(
    pair, tmp_path: Path, estimator: str, suffix: str, precision: str
) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, _, _ = pair
    base = CkaConfig(
        str(path_a),
        str(path_b),
        estimator=estimator,
        batch_size=8,
        block_rows=5,
        precision=precision,
    )
    whole = run_cka(base)
    parts = []
    for i in range(3):
        shard = compute_shard(dataclasses.replace(base, shard=(i, 3)))
        parts.append(write_shard(shard, tmp_path / f"part{i}{suffix}"))
    merged = merge_shards(parts[::-1])
    np.testing.assert_allclose(matrix(merged), matrix(whole), rtol=1e-12, atol=1e-14)
    assert merged.metrics["layers_a"] == whole.metrics["layers_a"]
    assert merged.metrics["precision"] == whole.metrics["precision"] == precision
    assert merged.model == whole.model and merged.metrics["model_b"] == whole.metrics["model_b"]
    with pytest.raises(InputError, match="no shard"):
        merge_shards(parts[:2])
    with pytest.raises(InputError, match="twice"):
        merge_shards([*parts, parts[1]])


def test_merge_refuses_incompatible_shards(pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, _, _ = pair
    lin = compute_shard(CkaConfig(str(path_a), str(path_b), shard=(0, 2)))
    deb = compute_shard(CkaConfig(str(path_a), str(path_b), estimator="debiased", shard=(1, 2)))
    other = compute_shard(CkaConfig(str(path_a), shard=(1, 2)))
    p0 = write_shard(lin, tmp_path / "p0.h5")
    with pytest.raises(InputError, match="estimator"):
        merge_shards([p0, write_shard(deb, tmp_path / "p1.h5")])
    with pytest.raises(InputError, match=r"layers_b|widths_b|identity"):
        merge_shards([p0, write_shard(other, tmp_path / "p2.json")])
    mixed = compute_shard(CkaConfig(str(path_a), str(path_b), precision="mixed", shard=(1, 2)))
    with pytest.raises(InputError, match="'precision' \\('mixed' vs 'exact'\\)"):
        merge_shards([p0, write_shard(mixed, tmp_path / "p3.h5")])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "lossxfer.result/1"}))
    with pytest.raises(InputError, match=r"expected lossxfer\.cka-shard"):
        merge_shards([p0, bad])


# -- backends ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [61, 62])  # odd and even n² (torch's median differs from numpy's)
@pytest.mark.parametrize("estimator", ["linear", "debiased", "minibatch", "rbf"])
def test_torch_cpu_backend_agrees_with_numpy(tmp_path: Path, estimator: str, n: int) -> None:
    a, b = net_layers(n, seed=1, offset=100.0), net_layers(n, seed=2)
    path_a, path_b = write_store(tmp_path / "a.h5", a), write_store(tmp_path / "b.h5", b)
    config = CkaConfig(
        str(path_a), str(path_b), estimator=estimator, batch_size=10, backend="numpy"
    )
    ours = matrix(run_cka(config))
    torch_cpu = matrix(run_cka(dataclasses.replace(config, backend="torch", device="cpu")))
    np.testing.assert_allclose(torch_cpu, ours, rtol=1e-9, atol=1e-12)


def test_unavailable_backends(pair) -> None:  # type: ignore[no-untyped-def]
    from lossxfer.backend import cupy_available
    from lossxfer.similarity.backends import get_backend

    with pytest.raises(UsageError, match="--backend numpy runs on the CPU"):
        get_backend("numpy", "cuda")
    with pytest.raises(UsageError, match=r"unknown backend .jax.; choose from"):
        get_backend("jax", "cpu")
    assert get_backend("auto", "cpu").name == "numpy"
    if not cupy_available():
        with pytest.raises(DeviceError, match="CuPy"):
            get_backend("cupy", "cuda")


# -- the command line --------------------------------------------------------------------------


def test_cli_table_json_result_and_plot(cli, pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path_a, path_b, a, b = pair
    out, png = tmp_path / "cka.json", tmp_path / "cka.png"
    run = cli("cka", path_a, path_b, "--estimator", "debiased", "-o", out, "--plot", png)
    assert run.code == 0, run.stderr
    expected = brute(as64(a), as64(b), "debiased")
    assert f"{expected[0, 0]:.3f}" in run.stdout and "penultimate" in run.stdout
    record = json.loads(out.read_text())
    assert record["kind"] == "cka" and record["format"] == "lossxfer.result/1"
    assert record["metrics"]["estimator"] == "debiased" and record["metrics"]["split"] == "test"
    np.testing.assert_allclose(record["metrics"]["matrix"], expected, rtol=1e-9)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = cli("cka", path_a, path_b, "-o", out)
    assert again.code == 2 and "--force" in again.stderr
    js = cli("cka", path_a, "--json", "--layers", "block1,logits")
    assert js.code == 0, js.stderr
    doc = json.loads(js.stdout)  # exactly one JSON document
    assert doc["metrics"]["layers_a"] == ["block1", "logits"]
    np.testing.assert_allclose(np.diag(doc["metrics"]["matrix"]), 1.0)


def test_cli_shard_then_merge(cli, pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path_a, _, _, _ = pair
    whole = cli("cka", path_a, "--estimator", "debiased", "--json")
    parts = [tmp_path / f"part{i}.h5" for i in range(2)]
    for i, part in enumerate(parts):
        quiet = ("-q",) if i else ()  # -q: the part's summary line is not printed
        run = cli("cka", path_a, "--estimator", "debiased", "--shard", f"{i}/2", "-o", part, *quiet)
        assert run.code == 0, run.stderr
        assert run.stdout == "" if quiet else f"part {i}/2" in run.stdout
    merged = cli("cka", "--merge", *parts, "--json")
    assert merged.code == 0, merged.stderr
    np.testing.assert_allclose(
        json.loads(merged.stdout)["metrics"]["matrix"],
        json.loads(whole.stdout)["metrics"]["matrix"],
        rtol=1e-12,
    )
    assert cli("cka", "--merge", parts[0], "--json").code == 3  # half the rows are missing
    assert cli("cka", path_a, "--shard", "0/2").code == 2  # no -o
    assert cli("cka", path_a, "--shard", "2/2", "-o", tmp_path / "x.h5").code == 2


def test_constant_layer_is_undefined_not_an_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    layers = {**net_layers(30, seed=3), "dead": np.full((30, 4), 2.5, np.float32)}
    run = cli("cka", write_store(tmp_path / "d.h5", layers), "--estimator", "debiased", "--json")
    assert run.code == 0, run.stderr
    m = json.loads(run.stdout)["metrics"]["matrix"]
    assert m[3] == [None] * 4 and m[0][3] is None  # NaN → null: CKA with a constant layer
    assert m[0][0] == pytest.approx(1.0)


def test_cli_errors(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tiny = write_store(tmp_path / "tiny.h5", {"x": np.ones((3, 2), np.float32)})
    run = cli("cka", tiny)
    assert run.code == 2 and "at least 4" in run.stderr
    layers = net_layers(20, seed=9)
    a = write_store(tmp_path / "a.h5", layers)
    b = write_store(tmp_path / "b.h5", layers, index=np.arange(20)[::-1].copy())
    run = cli("cka", a, b)
    assert run.code == 3 and "different samples" in run.stderr
    run = cli("cka", a, "--estimator", "rbf", "--max-n", "10")
    assert run.code == 2 and "--max-n" in run.stderr
    assert cli("cka", a, "--estimator", "cosine").code == 2
    assert cli("cka", a, "--backend", "numpy", "--device", "cuda").code == 2
    import torch

    if not torch.cuda.is_available():
        assert cli("cka", a, "--backend", "torch", "--device", "cuda:0").code == 4
    assert cli("cka", tmp_path / "missing.h5").code == 3
    poisoned = {**layers, "block2": layers["block2"].copy()}
    poisoned["block2"][13, 2] = np.nan
    bad = write_store(tmp_path / "nan.h5", poisoned)
    for estimator in ("linear", "minibatch", "rbf"):
        run = cli("cka", bad, "--estimator", estimator, "--batch-size", "4")
        assert run.code == 3 and "non-finite" in run.stderr and "row 13" in run.stderr
    run = cli("cka", a, "--layers-b", "block9")
    assert run.code == 2 and "unknown layer 'block9'" in run.stderr
