"""`lossxfer info`: kind told by content, metadata shown, bad files exit 3."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_checkpoint import make_checkpoint

from lossxfer.results import Result
from lossxfer.store import LayerSpec, StoreWriter


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ckpt = tmp_path / "model.safetensors"
    make_checkpoint(ckpt, seed=7)
    store = tmp_path / "acts.h5"
    attrs = {"arch": "smallcnn", "objective": "softmax", "model": {"seed": 7}, "pool": "avg"}
    with StoreWriter(store, attrs, dtype="float16") as w:
        w.create_split("test", 5, {"penultimate": LayerSpec(4, (4, 2, 2), "avg")})
        w.write("test", 0, np.arange(5), np.arange(5) * 2, {"penultimate": np.ones((5, 4))})
    result = tmp_path / "probe.json"
    Result(
        kind="probe",
        metrics={"layers": {"penultimate": {"linear": {"test_top1": 0.75, "curve": [1, 2]}}}},
        model={"arch": "smallcnn", "objective": "softmax"},
        dataset={"label": "digits[5-9]"},
    ).write(result)
    return {"checkpoint": ckpt, "store": store, "result": result}


def test_json_lists_one_object_per_file_in_order(cli, files: dict[str, Path]) -> None:
    order = ["result", "checkpoint", "store"]
    run = cli("info", *(files[k] for k in order), "--json")
    assert run.code == 0, run.stderr
    described = json.loads(run.stdout)
    assert [d["kind"] for d in described] == order
    result, ckpt, store = described
    assert result["format"] == "lossxfer.result/1" and result["result_kind"] == "probe"
    assert result["metrics"]["layers"]["penultimate"]["linear"]["test_top1"] == 0.75
    assert result["dataset"] == {"label": "digits[5-9]"}
    assert ckpt["format"] == "lossxfer.checkpoint/1"
    assert (ckpt["arch"], ckpt["objective"], ckpt["seed"]) == ("smallcnn", "softmax", 7)
    assert ckpt["classes"] == [0, 1, 2] and ckpt["num_classes"] == 3
    assert ckpt["input"] == {"channels": 1, "size": 8, "mean": [0.5], "std": [0.29],
                             "interpolation": "bicubic", "crop": 0.875}  # fmt: skip
    assert ckpt["objective_opts"] == {"temperature": 1.0}
    assert ckpt["metrics"] == {"test_top1": 0.5}
    assert ckpt["data"]["spec"] == "synthetic:classes=5,size=8"
    assert ckpt["parameters"] > 1000
    assert store["format"] == "lossxfer.activations/1"
    assert store["splits"] == {
        "test": {
            "rows": 5,
            "layers": {
                "penultimate": {"width": 4, "dtype": "float16", "shape": [4, 2, 2], "pool": "avg"}
            },
        }
    }
    assert store["model"] == {"seed": 7} and store["arch"] == "smallcnn"


def test_table_shows_metadata(cli, files: dict[str, Path]) -> None:
    run = cli("info", files["checkpoint"], files["store"])
    assert run.code == 0, run.stderr
    for text in ("(checkpoint)", "(store)", "smallcnn", "temperature=1.0", "splits.test.rows",
                 "splits.test.layers.penultimate", "width=4, dtype=float16"):  # fmt: skip
        assert text in run.stdout


def test_kind_is_told_by_content_not_extension(cli, files: dict[str, Path], tmp_path: Path) -> None:
    swapped = {
        "checkpoint": tmp_path / "really-a-checkpoint.json",
        "store": tmp_path / "really-a-store.safetensors",
        "result": tmp_path / "really-a-result.h5",
    }
    for kind, path in swapped.items():
        shutil.copy(files[kind], path)
    run = cli("info", *swapped.values(), "--json")
    assert run.code == 0, run.stderr
    assert [d["kind"] for d in json.loads(run.stdout)] == list(swapped)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"hello world\n", "not a lossxfer file"),
        (b'{"format": "something/1", "kind": "probe"}', "expected lossxfer.result"),
        (b"\x89HDF\r\n\x1a\n" + bytes(100), "not an HDF5 activation store"),
        (b"[1, 2", "invalid JSON"),
    ],
)
def test_bad_file_is_exit_3_naming_it(
    cli, files, tmp_path: Path, content: bytes, message: str
) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(content)
    run = cli("info", files["result"], bad, "--json")
    assert run.code == 3
    assert f"{bad}: " in run.stderr and message in run.stderr
    assert run.stdout == ""


def test_foreign_hdf5_is_exit_3(cli, tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as fh:
        fh["x"] = np.zeros(3)
    run = cli("info", path)
    assert run.code == 3 and "not a lossxfer.activations file" in run.stderr


def test_missing_file_is_exit_3(cli, tmp_path: Path) -> None:
    run = cli("info", tmp_path / "nope.h5")
    assert run.code == 3 and "no such file" in run.stderr
