"""GPU backends (CuPy kernels, torch on CUDA) against the numpy reference; skipped without a GPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_cka import matrix, net_layers, write_store

from lossxfer.similarity import CkaConfig, compute_shard, merge_shards, run_cka, write_shard

ESTIMATORS = ["linear", "debiased", "minibatch", "rbf"]


def _has_cupy() -> bool:
    from lossxfer.backend import cupy_available

    return cupy_available()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


pytestmark = pytest.mark.gpu
needs_cupy = pytest.mark.skipif(not _has_cupy(), reason="needs CuPy and a CUDA GPU")
needs_cuda = pytest.mark.skipif(not _has_cuda(), reason="needs torch with CUDA")


@pytest.fixture
def stores(tmp_path: Path) -> CkaConfig:
    a, b = net_layers(203, seed=1, offset=100.0), net_layers(203, seed=2)
    b["wide"] = np.repeat(a["block2"], 40, axis=1)[:, :500] + 0.01  # wider than a batch
    return CkaConfig(
        str(write_store(tmp_path / "a.h5", a)),
        str(write_store(tmp_path / "b.h5", b)),
        batch_size=32,
        passes=2,
        block_rows=37,
        backend="numpy",
    )


def _agree(config: CkaConfig, backend: str, estimator: str) -> None:
    base = dataclasses.replace(config, estimator=estimator)
    reference = matrix(run_cka(base))
    gpu = matrix(run_cka(dataclasses.replace(base, backend=backend, device="cuda")))
    np.testing.assert_allclose(gpu, reference, rtol=1e-9, atol=1e-9)  # the spec asks 1e-6


@needs_cupy
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_cupy_agrees_with_numpy(stores: CkaConfig, estimator: str) -> None:
    _agree(stores, "cupy", estimator)


@needs_cuda
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_torch_cuda_agrees_with_numpy(stores: CkaConfig, estimator: str) -> None:
    _agree(stores, "torch", estimator)


@needs_cupy
def test_cupy_kernels_match_the_generic_centring() -> None:
    import cupy

    from lossxfer.kernels import cka as kernels
    from lossxfer.similarity.backends import NumpyOps

    rng = np.random.default_rng(0)
    x = rng.normal(size=(33, 7))
    for unbiased in (False, True):
        host = x @ x.T
        NumpyOps().centre(host, unbiased)
        dev = cupy.asarray(x @ x.T)
        kernels.centre(dev, unbiased)
        np.testing.assert_allclose(cupy.asnumpy(dev), host, rtol=1e-12, atol=1e-12)
    host = x @ x.T
    NumpyOps().rbf_from_dot(host, 0.5)
    dev = cupy.asarray(x @ x.T)
    kernels.rbf_from_dot(dev, 0.5)
    np.testing.assert_allclose(cupy.asnumpy(dev), host, rtol=1e-12, atol=1e-12)


@needs_cupy
def test_cupy_shards_merge_with_numpy_shards(stores: CkaConfig, tmp_path: Path) -> None:
    base = dataclasses.replace(stores, estimator="debiased")
    whole = matrix(run_cka(base))
    parts = [
        write_shard(
            compute_shard(dataclasses.replace(base, shard=(i, 2), backend=backend, device=dev)),
            tmp_path / f"p{i}.h5",
        )
        for i, (backend, dev) in enumerate([("numpy", "cpu"), ("cupy", "cuda")])
    ]
    np.testing.assert_allclose(matrix(merge_shards(parts)), whole, rtol=1e-9, atol=1e-12)


@needs_cuda
@pytest.mark.parametrize("precision", ["exact", "mixed"])
def test_array_api_on_cuda_tensors_gives_the_numpy_numbers(precision: str) -> None:
    import torch

    from lossxfer.similarity import cka_matrix

    a, b = net_layers(203, seed=1, offset=100.0), net_layers(203, seed=2)
    expected = cka_matrix(a, b, "debiased", precision=precision).matrix
    on_gpu = {k: torch.from_numpy(v).cuda() for k, v in a.items()}
    got = cka_matrix(
        on_gpu,
        {k: torch.from_numpy(v).cuda() for k, v in b.items()},
        "debiased",
        precision=precision,
    ).matrix
    np.testing.assert_allclose(got, expected, rtol=1e-10 if precision == "exact" else 1e-6)


@needs_cupy
@pytest.mark.parametrize("precision", ["exact", "mixed"])
def test_array_api_on_cupy_arrays_gives_the_numpy_numbers(precision: str) -> None:
    import cupy

    from lossxfer.similarity import cka_matrix

    a, b = net_layers(203, seed=1, offset=100.0), net_layers(203, seed=2)
    expected = cka_matrix(a, b, "linear", precision=precision).matrix
    got = cka_matrix(
        {k: cupy.asarray(v) for k, v in a.items()},
        {k: cupy.asarray(v) for k, v in b.items()},
        "linear",
        precision=precision,
    ).matrix
    np.testing.assert_allclose(got, expected, rtol=1e-10 if precision == "exact" else 1e-6)
