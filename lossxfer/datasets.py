"""Dataset sources: what each `--data` name reads from disk (DESIGN.md §3).

Every loader returns a `Source` (its splits, labels and input spec). Nothing here unpickles or
`torch.load`s: CIFAR is read from its *binary* release (`cifar-10-batches-bin/*.bin`,
`cifar-100-binary/*.bin`, fixed-size records), the MNIST family from raw idx files, SVHN and the
Flowers/Cars annotations from MATLAB .mat files (scipy), STL-10 from its raw binary, and the
natural-image sets from their own split lists and image files. torchvision is used only to
download (`--download`), never to read, so its checksum checks cannot reject a partial copy and
every reader is tested on small files. A missing dataset raises `InputError` naming the folders
searched. Heavy modules are imported inside functions: the registry is read by `--help`.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lossxfer.errors import InputError, UsageError
from lossxfer.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

    from lossxfer.data import DataSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_IMAGE = 64  # at most this many pixels a side: normalise-only transforms, CIFAR stem
NATURAL = 224  # what the big natural-image sets are cropped to (REFERENCE.md §2)
IN_MEMORY = frozenset({"digits", "synthetic"})  # sources that need no data folder


class ImageDataset(Protocol):
    """Map-style dataset of (image, label): what torch's DataLoader consumes."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[Any, int]: ...


@dataclass(frozen=True)
class InputSpec:
    """What the network sees: channels, square size, normalisation."""

    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "size": self.size, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        return cls(int(d["channels"]), int(d["size"]), tuple(d["mean"]), tuple(d["std"]))


NATURAL_INPUT = InputSpec(3, NATURAL, IMAGENET_MEAN, IMAGENET_STD)


@dataclass
class Source:
    """What a dataset loader returns: the source splits and how to feed them to a network.

    `splits` maps "train" and "test" (and optionally "val", an official validation split) to
    datasets yielding (image tensor C×H×W in [0, 1] or PIL image, label); `labels` has the label
    of every row of each split, so subsets and splits are made without decoding images.
    """

    splits: dict[str, ImageDataset]
    labels: dict[str, np.ndarray]
    num_classes: int
    input: InputSpec
    tensor_images: bool = True  # items are ready tensors (no PIL decoding, no resizing needed)
    class_names: list[str] | None = None


class TensorImages:
    """An in-memory image dataset: N×C×H×W uint8 (0–255) or float ([0, 1]) images, int labels.

    uint8 storage keeps MNIST/CIFAR/SVHN at a quarter of the memory; items are float in [0, 1].
    """

    def __init__(self, images: torch.Tensor, labels: np.ndarray) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.batch([i])[0], int(self.labels[i])

    def batch(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Images of `rows` as one float tensor in [0, 1]."""
        import torch

        chosen = self.images[torch.as_tensor(rows, dtype=torch.int64)]
        return chosen.float() / 255.0 if chosen.dtype == torch.uint8 else chosen


class ImageFiles:
    """Images read lazily from files (RGB PIL images), with int labels."""

    def __init__(self, paths: list[Path], labels: np.ndarray) -> None:
        self.paths = paths
        self.labels = labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        from PIL import Image, UnidentifiedImageError

        path = self.paths[i]
        try:
            with Image.open(path) as image:
                return image.convert("RGB"), int(self.labels[i])
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"{path}: cannot read image ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# Registry of dataset loaders: name → function(spec, download) -> Source.

Loader = Callable[["DataSpec", bool], Source]
DATASETS: Registry[Loader] = Registry("dataset")


def data_root(spec: DataSpec) -> Path:
    """The dataset's folder, as the spec names it (DataSpec.parse applies the default root)."""
    if not spec.root:
        raise InputError(
            f"--data {spec.name}: no data folder given; use {spec.name}:PATH "
            "(or set LOSSXFER_DATA_ROOT)"
        )
    return Path(spec.root).expanduser()


def find_folder(name: str, candidates: Sequence[Path], required: Sequence[str]) -> Path:
    """The first candidate folder holding all `required` files, else InputError naming them."""
    for folder in candidates:
        if all((folder / r).exists() for r in required):
            return folder
    searched = ", ".join(str(c) for c in candidates)
    raise InputError(
        f"{name}: no {', '.join(required)} in {searched} "
        "(point --data NAME:ROOT at the dataset, or add --download where it can be fetched)"
    )


def _fetch(name: str, download: Callable[[], object]) -> None:
    """Run a torchvision download, turning its failures into one-line InputErrors."""
    try:
        download()
    except (RuntimeError, OSError, ValueError) as exc:
        raise InputError(f"{name}: download failed: {exc}") from exc


def _in_memory(
    splits: dict[str, tuple[torch.Tensor, np.ndarray]],
    num_classes: int,
    input_spec: InputSpec,
    class_names: list[str] | None = None,
) -> Source:
    return Source(
        {k: TensorImages(images, labels) for k, (images, labels) in splits.items()},
        {k: labels for k, (_, labels) in splits.items()},
        num_classes,
        input_spec,
        class_names=class_names,
    )


def _files(
    where: Path, splits: Mapping[str, tuple[list[Path], Sequence[int]]], class_names: list[str]
) -> Source:
    """A natural-image source from per-split file lists (224 px, ImageNet normalisation)."""
    import numpy as np

    for name, (paths, _) in splits.items():
        if not paths:
            raise InputError(f"{where}: no images for the {name} split")
        if not paths[0].is_file():
            raise InputError(f"{paths[0]}: image listed for the {name} split is missing")
    labels = {k: np.asarray(v, dtype=np.int64) for k, (_, v) in splits.items()}
    return Source(
        {k: ImageFiles(paths, labels[k]) for k, (paths, _) in splits.items()},
        labels,
        len(class_names),
        NATURAL_INPUT,
        tensor_images=False,
        class_names=class_names,
    )


def _check_labels(where: Path, labels: np.ndarray, num_classes: int) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(f"{where}: labels outside 0-{num_classes - 1}")


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _loadmat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        return dict(loadmat(path, squeeze_me=True))  # squeezed: 1-element arrays become scalars
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: cannot read MATLAB file ({exc})") from exc


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
    return _in_memory(splits, 10, InputSpec(1, 8, (0.3053,), (0.3760,)))


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
    return _in_memory(splits, k, InputSpec(channels, size, mean, std))


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
        _check_labels(files[split, "labels"], labels[split], k)
    if mean is None or std is None:
        # exact, from the pixel histogram: no float copy of the whole training set
        counts = np.bincount(arrays["train"].ravel(), minlength=256)
        values = np.arange(256) / 255.0
        mean = float(counts @ values / counts.sum())
        std = float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum()))
    size = int(arrays["train"].shape[-1])
    splits = {s: (torch.from_numpy(arrays[s].copy()).unsqueeze(1), labels[s]) for s in arrays}
    return _in_memory(splits, k, InputSpec(1, size, (mean,), (std,)))


def _register_mnist_like(name: str, folder: str, tv_class: str, mean: float, std: float) -> None:
    """mnist, fashion-mnist, kmnist: idx files in ROOT/<folder>/raw (torchvision's layout),
    ROOT/raw or ROOT; --download fetches them with torchvision."""

    @DATASETS.register(name)
    def load(spec: DataSpec, download: bool) -> Source:
        import torchvision.datasets

        root = data_root(spec)
        if download:
            _fetch(name, lambda: getattr(torchvision.datasets, tv_class)(root, download=True))
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
            _fetch(name, lambda: download_and_extract_archive(url, str(root), md5=md5))
        required = [f for files in layout.values() for f in files]
        base = find_folder(name, [root / folder, root], required)
        splits = {}
        for split, files in layout.items():
            parts = [read_cifar_bin(base / f, label_bytes) for f in files]
            images = np.concatenate([p[0] for p in parts])
            labels = np.concatenate([p[1] for p in parts])
            _check_labels(base, labels, num_classes)
            splits[split] = (torch.from_numpy(images), labels)
        names = _read_lines(base / names_file) if (base / names_file).is_file() else None
        spec_in = InputSpec(3, 32, IMAGENET_MEAN, IMAGENET_STD)
        return _in_memory(splits, num_classes, spec_in, names)

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
            _fetch("svhn", partial(SVHN, str(root), split=split, download=True))
    base = find_folder("svhn", [root / "svhn", root], ["train_32x32.mat", "test_32x32.mat"])
    splits = {}
    for split in ("train", "test"):
        mat = _loadmat(base / f"{split}_32x32.mat")
        images = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)).astype(np.uint8))
        labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10
        if len(images) != len(labels):
            raise InputError(
                f"{base / split}_32x32.mat: {len(images)} images, {len(labels)} labels"
            )
        splits[split] = (torch.from_numpy(images), labels)
    return _in_memory(splits, 10, InputSpec(3, 32, IMAGENET_MEAN, IMAGENET_STD))


@DATASETS.register("stl10")
def _stl10(spec: DataSpec, download: bool) -> Source:
    """STL-10 labelled splits: ROOT/stl10_binary/{train,test}_{X,y}.bin, 96×96 RGB."""
    import numpy as np
    import torch

    root = data_root(spec)
    if download:
        from torchvision.datasets import STL10

        _fetch("stl10", lambda: STL10(str(root), split="train", download=True))
    files = [f"{s}_{xy}.bin" for s in ("train", "test") for xy in ("X", "y")]
    base = find_folder("stl10", [root / "stl10_binary", root], files)
    splits = {}
    for split in ("train", "test"):
        pixels = np.fromfile(base / f"{split}_X.bin", dtype=np.uint8)
        labels = np.fromfile(base / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
        if pixels.size != len(labels) * 3 * 96 * 96:
            raise InputError(f"{base}: {split}_X.bin does not hold {len(labels)} 96×96 RGB images")
        _check_labels(base, labels, 10)
        # stored column-major: each plane is transposed
        images = pixels.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy()
        splits[split] = (torch.from_numpy(images), labels)
    names_file = base / "class_names.txt"
    names = _read_lines(names_file) if names_file.is_file() else None
    return _in_memory(splits, 10, InputSpec(3, 96, IMAGENET_MEAN, IMAGENET_STD), names)


# ---------------------------------------------------------------------------------------------
# Natural-image sets read from their split lists (224 px, REFERENCE.md §2 transforms).


def _download_tv(name: str, tv_class: str, root: Path, **kwargs: Any) -> None:
    import torchvision.datasets

    _fetch(
        name, lambda: getattr(torchvision.datasets, tv_class)(str(root), download=True, **kwargs)
    )


@DATASETS.register("food101")
def _food101(spec: DataSpec, download: bool) -> Source:
    """Food-101: ROOT/food-101/meta/{train,test}.json and images/<class>/<id>.jpg."""
    root = data_root(spec)
    if download:
        _download_tv("food101", "Food101", root)
    base = find_folder("food101", [root / "food-101", root], ["meta/train.json", "meta/test.json"])
    listing = {s: json.loads((base / "meta" / f"{s}.json").read_text()) for s in ("train", "test")}
    classes = sorted(listing["train"])
    splits = {}
    for split, by_class in listing.items():
        pairs = [
            (base / "images" / f"{rel}.jpg", classes.index(c))
            for c in by_class
            for rel in by_class[c]
        ]
        splits[split] = ([p for p, _ in pairs], [y for _, y in pairs])
    return _files(base, splits, classes)


@DATASETS.register("flowers102")
def _flowers102(spec: DataSpec, download: bool) -> Source:
    """Oxford 102 Flowers: ROOT/flowers-102/{jpg/, imagelabels.mat, setid.mat}; official val."""
    import numpy as np

    root = data_root(spec)
    if download:
        _download_tv("flowers102", "Flowers102", root)
    base = find_folder("flowers102", [root / "flowers-102", root], ["imagelabels.mat", "setid.mat"])
    labels = np.atleast_1d(_loadmat(base / "imagelabels.mat")["labels"])
    set_ids = _loadmat(base / "setid.mat")
    splits = {}
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        ids = [int(i) for i in np.atleast_1d(set_ids[key])]
        splits[split] = (
            [base / "jpg" / f"image_{i:05d}.jpg" for i in ids],
            [int(labels[i - 1]) - 1 for i in ids],
        )
    return _files(base, splits, [str(i) for i in range(1, 103)])


@DATASETS.register("oxford-pets")
def _oxford_pets(spec: DataSpec, download: bool) -> Source:
    """Oxford-IIIT Pets: ROOT/oxford-iiit-pet/annotations/{trainval,test}.txt and images/."""
    root = data_root(spec)
    if download:
        _download_tv("oxford-pets", "OxfordIIITPet", root)
    needed = ["annotations/trainval.txt", "annotations/test.txt"]
    base = find_folder("oxford-pets", [root / "oxford-iiit-pet", root], needed)
    names: dict[int, str] = {}
    splits = {}
    for split, listing in (("train", "trainval"), ("test", "test")):
        rows = [line.split() for line in _read_lines(base / "annotations" / f"{listing}.txt")]
        rows = [r for r in rows if not r[0].startswith("#")]
        for image, label, *_ in rows:
            names[int(label) - 1] = " ".join(w.title() for w in image.rsplit("_", 1)[0].split("_"))
        paths = [base / "images" / f"{r[0]}.jpg" for r in rows]
        splits[split] = (paths, [int(r[1]) - 1 for r in rows])
    return _files(base, splits, [names.get(i, str(i)) for i in range(max(names) + 1)])


@DATASETS.register("stanford-cars")
def _stanford_cars(spec: DataSpec, download: bool) -> Source:
    """Stanford Cars: ROOT/stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat,
    cars_test_annos_withlabels.mat, cars_train/, cars_test/} (no longer downloadable)."""
    import numpy as np

    root = data_root(spec)
    if download:
        _download_tv("stanford-cars", "StanfordCars", root)
    needed = ["devkit/cars_meta.mat", "devkit/cars_train_annos.mat"]
    needed.append("cars_test_annos_withlabels.mat")
    base = find_folder("stanford-cars", [root / "stanford_cars", root], needed)
    meta = _loadmat(base / "devkit" / "cars_meta.mat")
    classes = [str(c) for c in np.atleast_1d(meta["class_names"])]
    splits = {}
    for split, annos in (("train", "devkit/cars_train_annos.mat"), ("test", needed[2])):
        records = np.atleast_1d(_loadmat(base / annos)["annotations"])
        splits[split] = (
            [base / f"cars_{split}" / str(r["fname"]) for r in records],
            [int(r["class"]) - 1 for r in records],
        )
    return _files(base, splits, classes)


@DATASETS.register("dtd")
def _dtd(spec: DataSpec, download: bool) -> Source:
    """Describable Textures, partition 1: ROOT/dtd/dtd/{images/<class>/, labels/*1.txt}."""
    root = data_root(spec)
    if download:
        _download_tv("dtd", "DTD", root)
    needed = ["labels/train1.txt", "labels/val1.txt", "labels/test1.txt"]
    base = find_folder("dtd", [root / "dtd" / "dtd", root / "dtd", root], needed)
    listing = {s: _read_lines(base / "labels" / f"{s}1.txt") for s in ("train", "val", "test")}
    classes = sorted({rel.split("/")[0] for rels in listing.values() for rel in rels})
    splits = {
        s: ([base / "images" / r for r in rels], [classes.index(r.split("/")[0]) for r in rels])
        for s, rels in listing.items()
    }
    return _files(base, splits, classes)


_SUN397_PARTITIONS = "https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip"


@DATASETS.register("sun397")
def _sun397(spec: DataSpec, download: bool) -> Source:
    """SUN397, official partition 1: ROOT/SUN397/ClassName.txt, Training_01.txt,
    Testing_01.txt (from Partitions.zip, also looked for in ROOT and a Partitions/ folder)."""
    root = data_root(spec)
    if download:
        from torchvision.datasets.utils import download_and_extract_archive

        _download_tv("sun397", "SUN397", root)
        _fetch("sun397", lambda: download_and_extract_archive(_SUN397_PARTITIONS, str(root)))
    base = find_folder("sun397", [root / "SUN397", root], ["ClassName.txt"])
    lists = ["Training_01.txt", "Testing_01.txt"]
    parts = find_folder("sun397", [base, base / "Partitions", root, root / "Partitions"], lists)
    classes = _read_lines(base / "ClassName.txt")  # "/a/abbey"
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split, listing in zip(("train", "test"), lists, strict=True):
        rels = _read_lines(parts / listing)  # "/a/abbey/sun_aaa.jpg"
        unknown = [r for r in rels if r.rsplit("/", 1)[0] not in index]
        if unknown:
            raise InputError(f"{parts / listing}: {unknown[0]} is not in a ClassName.txt class")
        splits[split] = (
            [base / r.lstrip("/") for r in rels],
            [index[r.rsplit("/", 1)[0]] for r in rels],
        )
    return _files(base, splits, [c.split("/", 2)[-1] for c in classes])


# ---------------------------------------------------------------------------------------------
# imagefolder:PATH — ImageNet layout.

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
)


def _scan(folder: Path, classes: Iterable[str]) -> tuple[list[Path], list[int]]:
    """Image files under folder/<class>/ (recursively, sorted), labelled by class position."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames.sort()
            for f in sorted(filenames):
                if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith("."):
                    paths.append(Path(dirpath) / f)
                    labels.append(label)
    return paths, labels


@DATASETS.register("imagefolder")
def _imagefolder(spec: DataSpec, download: bool) -> Source:
    """`imagefolder:PATH`: PATH/train/<class>/*.jpg and PATH/val/ (or test/) as the test split.

    Class ids are the sorted train folder names; rows are in sorted path order (stable ids).
    """
    root = data_root(spec)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise InputError(f"imagefolder: no train/ folder in {root} (expected train/<class>/...)")
    eval_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if eval_dir is None:
        raise InputError(f"imagefolder: no val/ or test/ folder in {root}")
    classes = sorted(
        d.name for d in train_dir.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    extra = sorted(
        d.name
        for d in eval_dir.iterdir()
        if d.is_dir() and d.name not in classes and not d.name.startswith(".")
    )
    if extra:
        raise InputError(f"{eval_dir / extra[0]}: class folder not in {train_dir}")
    splits = {"train": _scan(train_dir, classes), "test": _scan(eval_dir, classes)}
    return _files(root, splits, classes)
