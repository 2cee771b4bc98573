"""The HDF5 activation store: streamed writes, aligned reads, atomicity, and bad stores → exit 3."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from lossxfer.errors import InputError, UsageError
from lossxfer.store import LayerSpec, StoreWriter, check_aligned, open_store

RNG = np.random.default_rng(0)
A = RNG.normal(size=(10, 3)).astype(np.float32)
B = RNG.normal(size=(10, 5)).astype(np.float32)
LABELS = np.arange(10) % 3
INDEX = np.arange(10) * 7 + 1


def write_store(path: Path, dtype: str = "float32", compression: str | None = None, **kw) -> Path:
    attrs = {"arch": "smallcnn", "model": {"seed": 3}, "objective_opts": {"t": 1.0}, **kw}
    with StoreWriter(path, attrs, dtype=dtype, compression=compression) as w:
        layers = {"a": LayerSpec(3, (3, 2, 2), "avg"), "b": LayerSpec(5, (5,), "none")}
        w.create_split("train", 10, layers)
        for lo in (0, 4, 8):  # uneven row blocks, as extraction writes them
            hi = min(lo + 4, 10)
            w.write("train", lo, LABELS[lo:hi], INDEX[lo:hi], {"a": A[lo:hi], "b": B[lo:hi]})
    return path


def test_round_trip_blocks_and_whole_layers(tmp_path: Path) -> None:
    with open_store(write_store(tmp_path / "s.h5", compression="lzf")) as store:
        assert store.splits == ["train"] and store.layers("train") == ["a", "b"]
        assert store.attrs["model"] == {"seed": 3} and store.attrs["arch"] == "smallcnn"
        assert store.attrs["format"] == "lossxfer.activations/1"
        assert store.layer_attrs("train", "a") == {"shape": [3, 2, 2], "pool": "avg"}
        assert store.compression("train", "a") == "lzf"
        np.testing.assert_array_equal(store.read("train", "a"), A)
        np.testing.assert_array_equal(store.labels("train"), LABELS)
        np.testing.assert_array_equal(store.index("train"), INDEX)
        blocks = list(store.blocks("train", ["b", "a"], block_rows=3))
        assert [b.start for b in blocks] == [0, 3, 6, 9]
        np.testing.assert_array_equal(np.concatenate([b.layers["a"] for b in blocks]), A)
        np.testing.assert_array_equal(np.concatenate([b.layers["b"] for b in blocks]), B)
        np.testing.assert_array_equal(np.concatenate([b.index for b in blocks]), INDEX)
        part = list(store.blocks("train", ["a"], block_rows=4, start=2, stop=7))
        np.testing.assert_array_equal(np.concatenate([b.labels for b in part]), LABELS[2:7])


def test_float16_round_trips_within_half_precision(tmp_path: Path) -> None:
    with open_store(write_store(tmp_path / "s.h5", dtype="float16")) as store:
        assert store.dtype("train", "a") == "float16"
        got = store.read("train", "a")
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, A, rtol=2**-11, atol=2**-24)
        assert not np.array_equal(got, A)  # it really was stored in half precision


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    with pytest.raises(ZeroDivisionError), StoreWriter(path, {}) as w:
        w.create_split("train", 4, {"a": LayerSpec(2, (2,), "none")})
        _ = 1 / 0
    with pytest.raises(RuntimeError, match="not fully written"), StoreWriter(path, {}) as w:
        w.create_split("train", 4, {"a": LayerSpec(2, (2,), "none")})
        w.write("train", 0, np.zeros(2), np.zeros(2), {"a": np.zeros((2, 2))})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("start", "rows", "labels"),
    [(0, np.zeros((2, 3)), np.zeros(2)), (3, np.zeros((2, 2)), np.zeros(2)),
     (0, np.zeros((2, 2)), np.zeros(3)), (-1, np.zeros((1, 2)), np.zeros(1))],
)  # fmt: skip
def test_rows_that_do_not_fit_are_refused_and_leave_nothing(
    tmp_path: Path, start: int, rows: np.ndarray, labels: np.ndarray
) -> None:
    """Too wide, past the end, labels of another length, before the start: one clear error."""
    with pytest.raises(ValueError, match="do not fit"), StoreWriter(tmp_path / "s.h5", {}) as w:
        w.create_split("train", 4, {"a": LayerSpec(2, (2,), "none")})
        w.write("train", start, labels, np.zeros(len(labels)), {"a": rows})
    assert list(tmp_path.iterdir()) == []


def test_existing_store_needs_force(tmp_path: Path) -> None:
    path = write_store(tmp_path / "s.h5")
    with pytest.raises(UsageError, match="exists"):
        write_store(path)
    with pytest.raises(UsageError, match="unknown dtype 'float64'"):
        StoreWriter(tmp_path / "t.h5", {}, dtype="float64")


def test_check_aligned(tmp_path: Path) -> None:
    a_path, b_path = write_store(tmp_path / "a.h5"), write_store(tmp_path / "b.h5")
    with open_store(a_path) as a, open_store(b_path) as b:
        check_aligned(a, b, "train")
    with h5py.File(b_path, "r+") as fh:
        fh["train/index"][0] = 999
    with (
        open_store(a_path) as a,
        open_store(b_path) as b,
        pytest.raises(InputError, match="holds different samples"),
    ):
        check_aligned(a, b, "train")


def _edit(path: Path, fn) -> None:
    with h5py.File(path, "r+") as fh:
        fn(fh)


def _resize(fh: h5py.File) -> None:
    del fh["train/b"]
    fh["train/b"] = np.zeros((9, 5), np.float32)


BAD = {
    "not hdf5": (lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 20), "not an HDF5"),
    "foreign hdf5": (lambda p: _edit(p, lambda f: f.attrs.pop("format")), "no format tag"),
    "newer version": (
        lambda p: _edit(p, lambda f: f.attrs.__setitem__("format", "lossxfer.activations/2")),
        "newer format version '2'",
    ),
    "other lossxfer file": (
        lambda p: _edit(p, lambda f: f.attrs.__setitem__("format", "lossxfer.cka-shard/1")),
        "is a 'lossxfer.cka-shard' file",
    ),
    "rows differ": (lambda p: _edit(p, _resize), "/train/b has 9 rows but the split has 10"),
    "no index": (lambda p: _edit(p, lambda f: f["train"].pop("index")), "has no 'index'"),
    "external link": (
        lambda p: _edit(p, lambda f: f.__setitem__("val", h5py.ExternalLink("x.h5", "/"))),
        "is a link to elsewhere",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_store_is_exit_3(tmp_path: Path, cli, case: str) -> None:
    path = write_store(tmp_path / "s.h5")
    damage, message = BAD[case]
    damage(path)
    with pytest.raises(InputError, match=message) as err:
        open_store(path)
    assert err.value.exit_code == 3 and str(path) in str(err.value)
    run = cli("info", path)
    assert run.code == 3 and message in run.stderr


def test_missing_split_or_layer_is_exit_3(tmp_path: Path) -> None:
    with open_store(write_store(tmp_path / "s.h5")) as store:
        with pytest.raises(InputError, match="no split 'test'; the store has train"):
            store.read("test", "a")
        with pytest.raises(UsageError, match="unknown layer 'c'; choose from: a, b"):
            next(store.blocks("train", ["a", "c"]))
        with pytest.raises(UsageError, match="unknown layer 'labels'"):
            store.read("train", "labels")
