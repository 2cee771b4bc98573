"""Dataset specs, splits, class subsets and transforms (DESIGN.md §3, REFERENCE.md §2).

A data spec is a string: `digits`, `synthetic[:k=v,...]`, `NAME[:ROOT]` for a torchvision
dataset, or `imagefolder:PATH`. Loading one gives a `Data` bundle whose splits are `train`, `val`
(a deterministic, seeded fraction held out from train) and `test`; every row keeps its position
in the source split (`index`), the stable sample id written to activation stores.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from lossxfer.errors import InputError, UsageError
from lossxfer.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch

SPLITS = ("train", "val", "test")


class ImageDataset(Protocol):
    """Map-style dataset of (image, label): what torch's DataLoader consumes."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[Any, int]: ...


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_IMAGE = 64  # at most this many pixels a side: normalise-only transforms, CIFAR stem


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


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: registry name, optional root path, and `k=v` options."""

    name: str
    root: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        text = text.strip()
        name, _, rest = text.partition(":")
        if not name:
            raise UsageError(f"--data {text!r}: empty dataset name")
        DATASETS.get(name)  # unknown name → exit 2 with "did you mean"
        if name == "synthetic":
            options = tuple(_parse_options(rest, text))
            return cls(name, None, options)
        return cls(name, rest or None, ())

    def __str__(self) -> str:
        if self.options:
            return f"{self.name}:" + ",".join(f"{k}={v}" for k, v in self.options)
        return f"{self.name}:{self.root}" if self.root else self.name

    def option(self, key: str, default: int) -> int:
        for k, v in self.options:
            if k == key:
                return int(v)
        return default


def _parse_options(text: str, spec: str) -> list[tuple[str, str]]:
    out = []
    for part in filter(None, text.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not re.fullmatch(r"-?\d+", value.strip()):
            raise UsageError(f"--data {spec!r}: expected key=integer options, got {part!r}")
        out.append((key.strip(), value.strip()))
    return out


def parse_classes(text: str | None) -> list[int] | None:
    """'0-4,7' → [0, 1, 2, 3, 4, 7]; None or '' → None (all classes)."""
    if text is None or not text.strip():
        return None
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UsageError(f"--classes {text!r}: expected ids and ranges like 0-4,7")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UsageError(f"--classes {text!r}: range {part} is empty ({hi} < {lo})")
        ids.extend(range(lo, hi + 1))
    if len(set(ids)) != len(ids):
        raise UsageError(f"--classes {text!r}: a class is listed twice")
    return sorted(ids)


def format_classes(ids: Sequence[int]) -> str:
    """[0, 1, 2, 3, 4, 7] → '0-4,7' (the inverse of parse_classes)."""
    parts: list[str] = []
    ids = sorted(ids)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


@dataclass
class Source:
    """What a dataset loader returns: the source splits and how to feed them to a network.

    `splits` maps "train" and "test" (and optionally "val", an official validation split) to
    torch datasets yielding (image tensor C×H×W in [0, 1] or PIL image, label); `labels` has the
    label of every row of each split, so subsets and splits are made without decoding images.
    """

    splits: dict[str, ImageDataset]
    labels: dict[str, np.ndarray]
    num_classes: int
    input: InputSpec
    tensor_images: bool = True  # items are ready tensors (no PIL decoding, no resizing needed)
    class_names: list[str] | None = None


@dataclass
class Split:
    """One split as the verbs use it: dataset with re-indexed labels, its rows' ids and labels."""

    name: str
    dataset: ImageDataset
    index: np.ndarray  # int64 position of each row in the source split
    labels: np.ndarray  # int64 re-indexed labels (0..K-1)

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class Data:
    """A loaded, class-subsetted, split dataset."""

    spec: DataSpec
    classes: list[int]  # source class ids, in the order of the re-indexed labels
    input: InputSpec
    val_fraction: float
    split_seed: int
    source: Source = field(repr=False)
    augment: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict[str, Any]:
        """The provenance record of this data (saved in checkpoints, stores and results)."""
        return {
            "spec": str(self.spec),
            "classes": self.classes,
            "label": self.label,
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed,
        }

    @property
    def label(self) -> str:
        """A short name for tables: 'digits[5-9]'."""
        full = list(range(self.source.num_classes))
        name = self.spec.name if self.spec.name != "imagefolder" else str(self.spec)
        return name if self.classes == full else f"{name}[{format_classes(self.classes)}]"

    def split(self, name: str, augment: bool | None = None) -> Split:
        """`train`, `val` or `test`; `augment` picks training transforms (default: eval)."""
        import numpy as np

        if name not in SPLITS:
            raise UsageError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
        rows = self._rows(name)
        if name == "val" and len(rows) == 0:
            raise UsageError(f"{self.spec}: there is no val split (--val-fraction is 0)")
        source_split = self._source_split(name)
        remap = np.full(self.source.num_classes, -1, dtype=np.int64)
        remap[self.classes] = np.arange(len(self.classes))
        labels = remap[self.source.labels[source_split][rows]]
        transform = self._transform(bool(augment))
        dataset = _Subset(self.source.splits[source_split], rows, labels, transform)
        return Split(name, dataset, rows.astype(np.int64), labels)

    def _rows(self, name: str) -> np.ndarray:
        """Source-split positions of this split's rows (class subset, val carved from train)."""
        import numpy as np

        source_split = self._source_split(name)
        labels = self.source.labels[source_split]
        rows = np.flatnonzero(np.isin(labels, self.classes))
        if source_split == "train" and "val" not in self.source.splits and self.val_fraction > 0:
            held = held_out(rows, labels[rows], self.val_fraction, self.split_seed)
            rows = rows[held] if name == "val" else rows[~held]
        return rows

    def _source_split(self, name: str) -> str:
        """Which source split holds a split's rows: val comes from train unless official."""
        return "train" if name == "val" and "val" not in self.source.splits else name

    def _transform(self, augment: bool) -> Callable[[Any], torch.Tensor] | None:
        from lossxfer.transforms import build_transform

        return build_transform(self.input, augment, tensor_images=self.source.tensor_images)


def held_out(rows: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask selecting a stratified, seeded `fraction` of rows for validation.

    Depends only on (rows, labels, fraction, seed), so it is stable across runs and machines.
    """
    import numpy as np

    mask = np.zeros(len(rows), dtype=bool)
    rng = np.random.default_rng(seed)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = round(len(members) * fraction)
        if take:
            mask[rng.permutation(members)[:take]] = True
    return mask


class _Subset:
    """Rows of a source dataset with re-indexed labels and a transform (picklable for workers)."""

    def __init__(
        self,
        base: ImageDataset,
        rows: np.ndarray,
        labels: np.ndarray,
        transform: Callable[[Any], torch.Tensor] | None,
    ) -> None:
        self.base = base
        self.rows = rows
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, _ = self.base[int(self.rows[i])]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """All images and labels as two tensors when the source is in memory (fast path)."""
        import torch

        from lossxfer.transforms import Normalize

        images = getattr(self.base, "images", None)
        if images is None or not isinstance(self.transform, (Normalize, type(None))):
            return None
        batch = images[torch.from_numpy(self.rows)]
        if self.transform is not None:
            batch = self.transform(batch)
        return batch, torch.from_numpy(self.labels)


# ---------------------------------------------------------------------------------------------
# Registry of dataset loaders: name → function(spec, download) -> Source.

Loader = Callable[[DataSpec, bool], Source]
DATASETS: Registry[Loader] = Registry("dataset")


def load_data(
    spec: str | DataSpec,
    classes: Sequence[int] | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    download: bool = False,
) -> Data:
    """Load a dataset by spec, pick a class subset, and hold out a validation fraction."""
    spec = DataSpec.parse(spec) if isinstance(spec, str) else spec
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"--val-fraction {val_fraction}: expected a value in [0, 1)")
    source = DATASETS.get(spec.name)(spec, download)
    all_classes = list(range(source.num_classes))
    chosen = list(classes) if classes is not None else all_classes
    if not chosen:
        raise UsageError(f"--classes: empty class subset for {spec}")
    bad = [c for c in chosen if c not in all_classes]
    if bad:
        raise UsageError(
            f"--classes: {spec} has classes 0-{source.num_classes - 1}; no class {bad[0]}"
        )
    return Data(spec, sorted(chosen), source.input, val_fraction, split_seed, source)


def with_classes(data: Data, classes: Sequence[int]) -> Data:
    """The same loaded data restricted to other classes (no reloading)."""
    return replace(data, classes=sorted(classes))


def data_root(spec: DataSpec) -> str:
    """The dataset's folder: from the spec, else $LOSSXFER_DATA_ROOT/<name>."""
    root = spec.root or os.environ.get("LOSSXFER_DATA_ROOT")
    if not root:
        raise InputError(
            f"--data {spec.name}: no root folder given; use {spec.name}:PATH or set "
            "LOSSXFER_DATA_ROOT"
        )
    return root if spec.root else os.path.join(root, spec.name)


class TensorImages:
    """An in-memory image dataset: float tensors N×C×H×W in [0, 1] plus int64 labels."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


@DATASETS.register("digits")
def _digits(spec: DataSpec, download: bool) -> Source:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes).

    Fixed split: every fifth image (i % 5 == 0) is test (360), the rest train (1,437).
    """
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    labels = bunch.target.astype(np.int64)
    is_test = np.arange(len(labels)) % 5 == 0
    splits: dict[str, ImageDataset] = {}
    split_labels: dict[str, np.ndarray] = {}
    for name, mask in (("train", ~is_test), ("test", is_test)):
        splits[name] = TensorImages(images[torch.from_numpy(mask)], labels[mask])
        split_labels[name] = labels[mask]
    return Source(splits, split_labels, 10, InputSpec(1, 8, (0.3053,), (0.3760,)))


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
    splits: dict[str, ImageDataset] = {}
    split_labels: dict[str, np.ndarray] = {}
    for name, per_class in (("train", spec.option("train", 50)), ("test", spec.option("test", 20))):
        labels = np.tile(np.arange(k, dtype=np.int64), per_class)
        noise = rng.normal(0.0, 0.25, (len(labels), channels, size, size)).astype(np.float32)
        images = np.clip(prototypes[labels] + noise, 0.0, 1.0)
        splits[name] = TensorImages(torch.from_numpy(images), labels)
        split_labels[name] = labels
    mean, std = (0.5,) * channels, (0.29,) * channels
    return Source(splits, split_labels, k, InputSpec(channels, size, mean, std))
