"""Dataset sources held in memory: digits, synthetic, the MNIST family (raw idx files), CIFAR
(its *binary* release, fixed-size records), SVHN (MATLAB .mat) and STL-10 (raw binary)."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossxfer.errors import InputError, UsageError
from lossxfer.inputs import IMAGENET_MEAN, IMAGENET_STD, InputSpec

if TYPE_CHECKING:
    import numpy as np

from lossxfer.datasets.base import (
    DATASETS,
    DataSpec,
    Source,
    check_labels,
    data_root,
    fetch,
    find_folder,
    in_memory,
    loadmat,
    read_lines,
)

# ---------------------------------------------------------------------------------------------
# In-memory sources.


@DATASETS.register("digits")
def _digits(spec: DataSpec, download: bool) -> Source:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes).

    Fixed split: every fifth image (i % 5 == 0) is test (360), the rest train (1,437). Read
    from the CSV that scikit-learn ships (64 pixel values 0–16 and the label per row), found
    without importing scikit-learn, whose import costs seconds.
    """
    import importlib.util

    import numpy as np
    import torch

    found = importlib.util.find_spec("sklearn")
    if found is None or not found.submodule_search_locations:
        raise InputError("digits: scikit-learn, which bundles the digits, is not installed")
    folder = Path(next(iter(found.submodule_search_locations)))
    path = folder / "datasets" / "data" / "digits.csv.gz"
    try:
        with gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise InputError(f"digits: cannot read {path}: {exc}") from None
    images = torch.from_numpy(table[:, :64].reshape(-1, 1, 8, 8) / 16.0)
    labels = table[:, 64].astype(np.int64)
    is_test = np.arange(len(labels)) % 5 == 0
    splits = {
        name: (images[torch.from_numpy(mask)], labels[mask])
        for name, mask in (("train", ~is_test), ("test", is_test))
    }
    return in_memory(splits, 10, InputSpec(1, 8, (0.3053,), (0.3760,)))


@DATASETS.register("synthetic")
def _synthetic(spec: DataSpec, download: bool) -> Source:
    """Seeded class-structured images for tests.

    Options: classes (10), size (8), channels (1), train (50 per class), test (20 per class),
    seed (0). Each class is a fixed random prototype image; samples add Gaussian noise.
    """
    import numpy as np
    import torch

    k = spec.option("classes", 10)
    size = spec.option("size", 8)
    channels = spec.option("channels", 1)
    seed = spec.option("seed", 0)
    if k < 1 or size < 1 or channels < 1:
        raise UsageError(f"--data {spec}: classes, size and channels must be positive")
    rng = np.random.default_rng(seed)
    prototypes = rng.random((k, channels, size, size), dtype=np.float32)
    splits = {}
    for name, per_class in (("train", spec.option("train", 50)), ("test", spec.option("test", 20))):
        labels = np.tile(np.arange(k, dtype=np.int64), per_class)
        noise = rng.normal(0.0, 0.25, (len(labels), channels, size, size)).astype(np.float32)
        splits[name] = (torch.from_numpy(np.clip(prototypes[labels] + noise, 0.0, 1.0)), labels)
    mean, std = (0.5,) * channels, (0.29,) * channels
    return in_memory(splits, k, InputSpec(channels, size, mean, std))


# ---------------------------------------------------------------------------------------------
# MNIST family: raw idx files (`train-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte`, ...).


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte idx array: magic 0 0 0x08 ndim, big-endian uint32 dims, then data."""
    import numpy as np

    opener: Callable[[Path, str], Any] = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read idx file ({exc})") from exc
    if len(raw) < 4 or raw[:3] != b"\0\0\x08":
        raise InputError(f"{path}: not an unsigned-byte idx file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise InputError(f"{path}: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


_IDX_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}


def _idx_file(folder: Path, split: str, kind: str) -> Path | None:
    """The one `*{train|t10k|test}-{images-idx3|labels-idx1}-ubyte[.gz]` file, if any."""
    rank = 3 if kind == "images" else 1
    found = sorted(
        p
        for prefix in _IDX_PREFIXES[split]
        for suffix in ("", ".gz")
        for p in folder.glob(f"*{prefix}-{kind}-idx{rank}-ubyte{suffix}")
    )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise InputError(f"{folder}: several {split} {kind} files ({names}); keep one set")
    return found[0] if found else None


def _idx_files(name: str, candidates: Sequence[Path]) -> dict[tuple[str, str], Path]:
    """(split, kind) → file, from the first candidate folder that has all four."""
    for folder in candidates:
        files = {
            (split, kind): _idx_file(folder, split, kind)
            for split in ("train", "test")
            for kind in ("images", "labels")
        }
        if all(files.values()):
            return {key: path for key, path in files.items() if path is not None}
    searched = ", ".join(str(c) for c in candidates)
    raise InputError(
        f"{name}: no train-/t10k-{{images-idx3,labels-idx1}}-ubyte[.gz] files in {searched}"
    )


def load_idx_folder(
    name: str,
    candidates: Sequence[Path],
    num_classes: int | None = None,
    mean: float | None = None,
    std: float | None = None,
) -> Source:
    """A 1-channel source from the first candidate folder with train and test idx files.

    Without `num_classes`/`mean`/`std` they are computed from the training set.
    """
    import numpy as np
    import torch

    files = _idx_files(name, candidates)
    arrays: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        arrays[split] = read_idx(files[split, "images"])
        labels[split] = read_idx(files[split, "labels"]).astype(np.int64)
        if arrays[split].ndim != 3 or len(arrays[split]) != labels[split].size:
            where = files[split, "images"]
            raise InputError(f"{where}: images {arrays[split].shape} do not match the labels")
    k = num_classes or int(max(labels["train"].max(), labels["test"].max())) + 1
    for split in ("train", "test"):
        check_labels(files[split, "labels"], labels[split], k)
    if mean is None or std is None:
        # exact, from the pixel histogram: no float copy of the whole training set
        counts = np.bincount(arrays["train"].ravel(), minlength=256)
        values = np.arange(256) / 255.0
        mean = float(counts @ values / counts.sum())
        std = float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum()))
    size = int(arrays["train"].shape[-1])
    splits = {s: (torch.from_numpy(arrays[s].copy()).unsqueeze(1), labels[s]) for s in arrays}
    return in_memory(splits, k, InputSpec(1, size, (mean,), (std,)))


def _register_mnist_like(name: str, folder: str, tv_class: str, mean: float, std: float) -> None:
    """mnist, fashion-mnist, kmnist: idx files in ROOT/<folder>/raw (torchvision's layout),
    ROOT/raw or ROOT; --download fetches them with torchvision."""

    @DATASETS.register(name)
    def load(spec: DataSpec, download: bool) -> Source:
        import torchvision.datasets

        root = data_root(spec)
        if download:
            fetch(name, lambda: getattr(torchvision.datasets, tv_class)(root, download=True))
        candidates = [root / folder / "raw", root / "raw", root]
        return load_idx_folder(name, candidates, 10, mean, std)

    load.__doc__ = f"{name}: 28×28 grey, 10 classes, from raw idx files."


_register_mnist_like("mnist", "MNIST", "MNIST", 0.1307, 0.3081)
_register_mnist_like("fashion-mnist", "FashionMNIST", "FashionMNIST", 0.2860, 0.3530)
_register_mnist_like("kmnist", "KMNIST", "KMNIST", 0.1918, 0.3483)


@DATASETS.register("idx")
def _idx(spec: DataSpec, download: bool) -> Source:
    """`idx:DIR`: any MNIST-style set of raw idx files; classes, mean, std from the data."""
    return load_idx_folder("idx", [data_root(spec)])


# ---------------------------------------------------------------------------------------------
# CIFAR-10/100 binary release, SVHN (.mat), STL-10 (raw binary): small in-memory RGB images.

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"


def read_cifar_bin(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Records of `label_bytes` label bytes + 3,072 pixel bytes (R, G, B planes of 32×32).

    Returns uint8 images N×3×32×32 and the last label byte (CIFAR-100: the fine label).
    """
    import numpy as np

    record = label_bytes + 3 * 32 * 32
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % record:
        raise InputError(f"{path}: {raw.size} bytes is not a whole number of {record}-byte records")
    raw = raw.reshape(-1, record)
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32), raw[:, label_bytes - 1].astype(np.int64)


def _register_cifar(
    name: str, folder: str, archive: str, md5: str, label_bytes: int, layout: dict[str, list[str]]
) -> None:
    names_file = "batches.meta.txt" if label_bytes == 1 else "fine_label_names.txt"
    num_classes = 10 if label_bytes == 1 else 100

    @DATASETS.register(name)
    def load(spec: DataSpec, download: bool) -> Source:
        import numpy as np
        import torch

        root = data_root(spec)
        if download:
            from torchvision.datasets.utils import download_and_extract_archive

            url = _CIFAR_URL + archive
            fetch(name, lambda: download_and_extract_archive(url, str(root), md5=md5))
        required = [f for files in layout.values() for f in files]
        base = find_folder(name, [root / folder, root], required)
        splits = {}
        for split, files in layout.items():
            parts = [read_cifar_bin(base / f, label_bytes) for f in files]
            images = np.concatenate([p[0] for p in parts])
            labels = np.concatenate([p[1] for p in parts])
            check_labels(base, labels, num_classes)
            splits[split] = (torch.from_numpy(images), labels)
        names = read_lines(base / names_file) if (base / names_file).is_file() else None
        spec_in = InputSpec(3, 32, IMAGENET_MEAN, IMAGENET_STD)
        return in_memory(splits, num_classes, spec_in, names)

    load.__doc__ = f"{name}: 32×32 RGB from the binary release ({archive}), never the pickles."


_register_cifar(
    "cifar10",
    "cifar-10-batches-bin",
    "cifar-10-binary.tar.gz",
    "c32a1d4ab5d03f1284b67883e8d87530",
    1,
    {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
)
_register_cifar(
    "cifar100",
    "cifar-100-binary",
    "cifar-100-binary.tar.gz",
    "03b5dce01913d631647c71ecec9e9cb8",
    2,
    {"train": ["train.bin"], "test": ["test.bin"]},
)


@DATASETS.register("svhn")
def _svhn(spec: DataSpec, download: bool) -> Source:
    """SVHN cropped digits: ROOT/{train,test}_32x32.mat (label 10 means digit 0)."""
    import numpy as np
    import torch

    root = data_root(spec)
    if download:
        from torchvision.datasets import SVHN

        for split in ("train", "test"):
            fetch("svhn", partial(SVHN, str(root), split=split, download=True))
    base = find_folder("svhn", [root / "svhn", root], ["train_32x32.mat", "test_32x32.mat"])
    splits = {}
    for split in ("train", "test"):
        mat = loadmat(base / f"{split}_32x32.mat")
        images = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)).astype(np.uint8))
        labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10
        if len(images) != len(labels):
            raise InputError(
                f"{base / split}_32x32.mat: {len(images)} images, {len(labels)} labels"
            )
        splits[split] = (torch.from_numpy(images), labels)
    return in_memory(splits, 10, InputSpec(3, 32, IMAGENET_MEAN, IMAGENET_STD))


@DATASETS.register("stl10")
def _stl10(spec: DataSpec, download: bool) -> Source:
    """STL-10 labelled splits: ROOT/stl10_binary/{train,test}_{X,y}.bin, 96×96 RGB."""
    import numpy as np
    import torch

    root = data_root(spec)
    if download:
        from torchvision.datasets import STL10

        fetch("stl10", lambda: STL10(str(root), split="train", download=True))
    files = [f"{s}_{xy}.bin" for s in ("train", "test") for xy in ("X", "y")]
    base = find_folder("stl10", [root / "stl10_binary", root], files)
    splits = {}
    for split in ("train", "test"):
        pixels = np.fromfile(base / f"{split}_X.bin", dtype=np.uint8)
        labels = np.fromfile(base / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
        if pixels.size != len(labels) * 3 * 96 * 96:
            raise InputError(f"{base}: {split}_X.bin does not hold {len(labels)} 96×96 RGB images")
        check_labels(base, labels, 10)
        # stored column-major: each plane is transposed
        images = pixels.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy()
        splits[split] = (torch.from_numpy(images), labels)
    names_file = base / "class_names.txt"
    names = read_lines(names_file) if names_file.is_file() else None
    return in_memory(splits, 10, InputSpec(3, 96, IMAGENET_MEAN, IMAGENET_STD), names)
