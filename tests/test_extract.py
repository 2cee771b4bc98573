"""`lossxfer extract` and `store merge`: stored rows equal a direct forward pass, and so on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from test_checkpoint import make_checkpoint

from lossxfer.activations import hooked
from lossxfer.checkpoint import load_checkpoint
from lossxfer.data import load_data
from lossxfer.inputs import InputSpec
from lossxfer.store import check_aligned, open_store

DATA = "synthetic:classes=5,size=8"  # 50 train + 20 test images per class, 1 channel


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    make_checkpoint(path, "smallcnn", classes=(0, 1, 2), data=DATA)
    return path


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("resnet") / "model.safetensors"
    make_checkpoint(path, "resnet18", classes=(0, 1, 2), data=DATA)
    return path


def reference(
    ckpt: Path, split: str, classes: list[int], block: str, rows: int | None = None
) -> dict[str, np.ndarray]:
    """A plain forward pass of the first `rows` of a split, written independently of extract.py."""
    network, _ = load_checkpoint(ckpt)
    network.eval()
    images, _ = load_data(DATA, classes, val_fraction=0.0).split(split).dataset.tensors()
    out: dict[str, torch.Tensor] = {}
    hook = network.backbone.named_layers()[block].register_forward_hook(
        lambda _m, _i, o: out.__setitem__(block, o)
    )
    with torch.no_grad():
        penultimate = network.backbone(images[:rows])
        logits = network.head(penultimate)
    hook.remove()
    return {
        "logits": logits.numpy(),
        "penultimate": penultimate.numpy(),
        block: out[block].mean((2, 3)).numpy(),
        f"{block}/flat": out[block].flatten(1).numpy(),
    }


def test_rows_equal_a_direct_forward_pass(cli, resnet: Path, tmp_path: Path) -> None:
    out = tmp_path / "acts.h5"
    run = cli("extract", resnet, "--data", DATA, "--layers", "block3,penultimate,logits",
              "--batch-size", "16", "--limit", "40", "-o", out, "--json", "-q")  # fmt: skip
    assert run.code == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["kind"] == "extract"
    assert result["metrics"] == {
        "splits": {"train": 40, "test": 40},
        "layers": {"block3": 128, "penultimate": 512, "logits": 3},
        "same_layers": {},  # ResNet-18's block3 is not the last block
    }
    timing = result["timing"]  # the rate of extraction proper, not of imports and set-up
    assert timing["rows_per_s"] == pytest.approx(80 / timing["stream_s"])
    assert timing["stream_s"] < timing["wall_s"]
    assert 0 < timing["close_s"] < timing["stream_s"] - timing["forward_s"]
    assert result["model"]["arch"] == "resnet18"
    with open_store(out) as store:
        for split in ("train", "test"):
            ref = reference(resnet, split, [0, 1, 2], "block3", rows=40)
            data = load_data(DATA, [0, 1, 2], val_fraction=0.0).split(split)
            np.testing.assert_array_equal(store.index(split), data.index[:40])
            np.testing.assert_array_equal(store.labels(split), data.labels[:40])
            for layer in ("block3", "penultimate", "logits"):
                np.testing.assert_allclose(
                    store.read(split, layer), ref[layer], rtol=1e-5, atol=1e-5
                )
        attrs = store.attrs
        assert attrs["arch"] == "resnet18" and attrs["objective"] == "softmax"
        assert attrs["data"] == DATA and attrs["pool"] == "avg"
        assert attrs["dataset"]["classes"] == [0, 1, 2]  # the checkpoint's own task by default
        assert attrs["model"]["checkpoint_sha256"] == attrs["checkpoint_sha256"]
        assert attrs["transform"] == "Normalize(mean=[0.5], std=[0.29])"
        assert store.layer_attrs("test", "block3") == {"shape": [128, 4, 4], "pool": "avg"}


def test_flatten_float16_and_alignment(cli, ckpt: Path, tmp_path: Path) -> None:
    full, half = tmp_path / "full.h5", tmp_path / "half.h5"
    assert cli("extract", ckpt, "--data", DATA, "--layers", "block2", "--pool", "flatten",
               "--split", "test", "-o", full, "-q").code == 0  # fmt: skip
    run = cli("extract", ckpt, "--data", DATA, "--layers", "block2,logits", "--pool", "flatten",
              "--split", "test", "--dtype", "float16", "--batch-size", "7", "-o", half)  # fmt: skip
    assert run.code == 0, run.stderr
    ref = reference(ckpt, "test", [0, 1, 2], "block2")
    with open_store(full) as a, open_store(half) as b:
        check_aligned(a, b, "test")
        assert a.dim("test", "block2") == 128 * 4 * 4
        np.testing.assert_allclose(
            a.read("test", "block2"), ref["block2/flat"], rtol=1e-5, atol=1e-5
        )
        assert b.dtype("test", "block2") == "float16"
        np.testing.assert_allclose(
            b.read("test", "block2"), ref["block2/flat"], rtol=1e-3, atol=1e-3
        )
        np.testing.assert_allclose(b.read("test", "logits"), ref["logits"], rtol=1e-3, atol=1e-4)


def test_layers_all_on_resnet18(cli, resnet: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.h5"
    run = cli("extract", resnet, "--data", DATA, "--layers", "all", "--split", "test",
              "--limit", "9", "-o", out, "--json", "-q")  # fmt: skip
    assert run.code == 0, run.stderr
    widths = [64, 64, 64, 128, 128, 256, 256, 512, 512, 512, 3]
    names = ["stem", *(f"block{i}" for i in range(1, 9)), "penultimate", "logits"]
    assert json.loads(run.stdout)["metrics"]["layers"] == dict(zip(names, widths, strict=True))
    with open_store(out) as store:
        assert store.layers("test") == names
        assert [store.dim("test", n) for n in names] == widths
        assert store.num_rows("test") == 9


def test_transfer_classes_and_val_split(cli, ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "xfer.h5"
    run = cli("extract", ckpt, "--data", DATA, "--classes", "3-4", "--split", "train",
              "--split", "val", "--split", "test", "-o", out, "--json", "-q")  # fmt: skip
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["metrics"]["splits"] == {"train": 90, "val": 10, "test": 40}
    data = load_data(DATA, [3, 4], val_fraction=0.1)
    with open_store(out) as store:
        assert store.attrs["dataset"]["classes"] == [3, 4]
        assert store.attrs["dataset"]["val_fraction"] == 0.1
        for split in ("train", "val", "test"):
            np.testing.assert_array_equal(store.index(split), data.split(split).index)
            assert set(store.labels(split)) == {0, 1}
        assert not set(store.index("train")) & set(store.index("val"))


@pytest.mark.slow
def test_shards_merge_to_the_single_extraction(cli, ckpt: Path, tmp_path: Path) -> None:
    common = ("--data", DATA, "--split", "test", "--layers", "block1,logits", "--batch-size", "8",
              "-q")  # fmt: skip
    assert cli("extract", ckpt, *common, "-o", tmp_path / "one.h5").code == 0
    for i in range(3):
        run = cli("extract", ckpt, *common, "--shard", f"{i}/3", "-o", tmp_path / f"p{i}.h5")
        assert run.code == 0, run.stderr
    parts = [tmp_path / f"p{i}.h5" for i in (2, 0, 1)]  # any order
    run = cli("store", "merge", *parts, "-o", tmp_path / "merged.h5", "--json")
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["metrics"]["splits"] == {"test": 60}
    with open_store(tmp_path / "one.h5") as one, open_store(tmp_path / "merged.h5") as merged:
        assert merged.splits == one.splits and "shard" not in merged.attrs
        for split in one.splits:
            np.testing.assert_array_equal(merged.index(split), one.index(split))
            np.testing.assert_array_equal(merged.labels(split), one.labels(split))
            for layer in ("block1", "logits"):
                np.testing.assert_array_equal(merged.read(split, layer), one.read(split, layer))

    assert cli("extract", ckpt, *common, "--shard", "3/2", "-o", tmp_path / "x.h5").code == 2
    other = tmp_path / "other.safetensors"
    make_checkpoint(other, "smallcnn", classes=(0, 1, 2), data=DATA, seed=1)
    cli("extract", other, *common, "--shard", "1/3", "-o", tmp_path / "o1.h5")
    cli("extract", ckpt, *common[:2], "--split", "test", "--layers", "block1", "--shard", "1/3",
        "-o", tmp_path / "l1.h5", "-q")  # fmt: skip
    cli("extract", ckpt, *common, "--limit", "40", "--shard", "1/3", "-o", tmp_path / "n1.h5")
    p0, p2 = tmp_path / "p0.h5", tmp_path / "p2.h5"
    bad = {
        "different checkpoint": ([p0, tmp_path / "o1.h5", p2], "checkpoint_sha256 differs"),
        "different layers": ([p0, tmp_path / "l1.h5", p2], "has layers"),
        "other rows": ([p0, tmp_path / "n1.h5", p2], "shard split_rows differs"),
        "same shard twice": ([p0, p0, p2], "shard 0 is given twice"),
        "missing shard": ([p0, p2], "without shard(s) 1/3"),
        "not a shard": ([tmp_path / "one.h5", p0], "not an extraction shard"),
    }
    for case, (paths, message) in bad.items():
        run = cli("store", "merge", *paths, "-o", tmp_path / "bad.h5")
        assert run.code == 3 and message in run.stderr, (case, run.stderr)
    assert not (tmp_path / "bad.h5").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--layers", "blok2"), 2, "unknown layer 'blok2' (did you mean 'block2'?)"),
        (("--pool", "max"), 2, "unknown pool 'max'"),
        (("--dtype", "int8"), 2, "unknown dtype 'int8'"),
        (("--split", "dev"), 2, "unknown split 'dev'"),
        (("--classes", "9"), 2, "no class 9"),
        (("--shard", "1/1x"), 2, "--shard '1/1x'"),
    ],
)
def test_usage_errors(cli, ckpt: Path, tmp_path: Path, args, code: int, message: str) -> None:
    out = tmp_path / "acts.h5"
    run = cli("extract", ckpt, "--data", DATA, *args, "-o", out)
    assert run.code == code and message in run.stderr, run.stderr
    assert not out.exists()


def test_wrong_input_size_is_refused(cli, tmp_path: Path) -> None:
    ckpt = tmp_path / "m32.safetensors"
    make_checkpoint(ckpt, input_spec=InputSpec(1, 32, (0.5,), (0.29,)))
    run = cli("extract", ckpt, "--data", DATA, "-o", tmp_path / "a.h5")
    assert run.code == 2 and "expects 1-channel 32 px inputs" in run.stderr


def test_existing_output_kept_and_bad_checkpoint_exit_3(cli, ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "acts.h5"
    out.write_bytes(b"precious")
    run = cli("extract", ckpt, "--data", DATA, "-o", out)
    assert run.code == 2 and "exists (use --force" in run.stderr
    assert out.read_bytes() == b"precious"
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(ckpt.read_bytes()[:5000])
    run = cli("extract", broken, "--data", DATA, "-o", tmp_path / "b.h5")
    assert run.code == 3 and str(broken) in run.stderr


def test_hooks_are_removed_even_on_error(ckpt: Path) -> None:
    network, _ = load_checkpoint(ckpt)
    modules = network.named_layers().values()
    with (
        pytest.raises(ZeroDivisionError),
        hooked(network.named_layers(), network.layer_names(), print),
    ):
        assert all(m._forward_hooks for m in modules)
        _ = 1 / 0
    assert not any(m._forward_hooks for m in modules)


@pytest.mark.slow
def test_killed_extraction_leaves_no_store(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "acts.h5"
    data = "synthetic:classes=10,size=8,train=2000,test=1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossxfer", "extract", str(ckpt), "--data", data, "--classes",
         "0-9", "--layers", "all", "--pool", "flatten", "--batch-size", "8", "-o", str(out)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".acts.h5.*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # rows are being written
    assert proc.poll() is None, "extraction finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()


def test_image_files_through_worker_processes(cli, tmp_path: Path) -> None:
    """File-backed data: DataLoader workers, and the checkpoint's own size and normalisation."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    pixels = {}
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                pixels[split, cls, i] = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
                Image.fromarray(pixels[split, cls, i]).save(root / split / cls / f"{i}.png")
    ckpt = tmp_path / "m.safetensors"
    make_checkpoint(ckpt, classes=(0, 1), input_spec=InputSpec(3, 16, (0.4,) * 3, (0.2,) * 3))
    out = tmp_path / "acts.h5"
    run = cli("extract", ckpt, "--data", f"imagefolder:{root}", "--split", "test", "--workers",
              "2", "--batch-size", "4", "-o", out, "-q")  # fmt: skip
    assert run.code == 0, run.stderr
    images = torch.stack([
        F.resize(torch.from_numpy(pixels["val", c, i]).permute(2, 0, 1), [16, 16], antialias=True)
        for c in ("cat", "dog") for i in range(3)
    ]).float() / 255  # fmt: skip
    network, _ = load_checkpoint(ckpt)
    with torch.no_grad():
        logits = network.eval()((images - 0.4) / 0.2).numpy()
    with open_store(out) as store:
        np.testing.assert_array_equal(store.labels("test"), [0, 0, 0, 1, 1, 1])
        np.testing.assert_array_equal(store.index("test"), np.arange(6))
        np.testing.assert_allclose(store.read("test", "logits"), logits, rtol=1e-4, atol=1e-4)
