"""Dataset sources, the common part: the data spec, the registry and what loaders return.

Every loader (`small.py`: in-memory and small-image sets; `natural.py`: natural-image sets)
returns a `Source` (its splits, labels and input spec). Nothing here unpickles or `torch.load`s;
torchvision is used only to download (`--download`), never to read. A missing dataset raises
`InputError` naming the folders searched. Heavy modules are imported inside functions: the
registry is read by `--help` and completion.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lossxfer.errors import InputError, UsageError
from lossxfer.inputs import NATURAL_INPUT, InputSpec
from lossxfer.registry import Registry, check_choice

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

IN_MEMORY = frozenset({"digits", "synthetic"})  # sources that need no data folder
# The `name:k=v,…` parameters each parameterised dataset declares (DataSpec.parse checks keys).
PARAMETERS = {"synthetic": ("classes", "size", "channels", "train", "test", "seed")}


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: registry name, optional root path, and `k=v` options."""

    name: str
    root: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str, default_root: str | None = None) -> DataSpec:
        """`NAME[:ROOT]`; a file-backed NAME without ROOT gets `default_root/NAME`.

        The CLI passes $LOSSXFER_DATA_ROOT as `default_root` (the library reads no environment);
        the resolved root is kept in the spec, so artifacts record where the data came from.
        """
        text = text.strip()
        name, _, rest = text.partition(":")
        if not name:
            raise UsageError(f"--data {text!r}: empty dataset name")
        DATASETS.get(name)  # unknown name → exit 2 with "did you mean"
        if name in PARAMETERS:
            options = tuple(_parse_options(rest, text, PARAMETERS[name]))
            return cls(name, None, options)
        if name in IN_MEMORY:
            if rest:
                raise UsageError(f"--data {text!r}: {name} is built in and takes no folder")
            return cls(name)
        if not rest and default_root:
            rest = os.path.join(default_root, name)
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


def _parse_options(text: str, spec: str, names: Sequence[str]) -> list[tuple[str, str]]:
    """`k=v,…` of a dataset that declares parameters `names`: a typo is an error, never a
    silently ignored key (`synthetic:clases=3` would train on the default 10 classes)."""
    out: list[tuple[str, str]] = []
    for part in filter(None, text.split(",")):
        key, eq, value = (p.strip() for p in part.partition("="))
        if not eq or not re.fullmatch(r"-?\d+", value):
            raise UsageError(f"--data {spec!r}: expected key=integer options, got {part!r}")
        try:
            check_choice(f"{spec.partition(':')[0]} parameter", key, names)
        except UsageError as exc:
            raise UsageError(f"--data {spec!r}: {exc}") from None
        if any(k == key for k, _ in out):
            raise UsageError(f"--data {spec!r}: {key} is given twice")
        out.append((key, value))
    return out


class ImageDataset(Protocol):
    """Map-style dataset of (image, label): what torch's DataLoader consumes."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[Any, int]: ...


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

Loader = Callable[[DataSpec, bool], Source]
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


def fetch(name: str, download: Callable[[], object]) -> None:
    """Run a torchvision download, turning its failures into one-line InputErrors."""
    try:
        download()
    except (RuntimeError, OSError, ValueError) as exc:
        raise InputError(f"{name}: download failed: {exc}") from exc


def in_memory(
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


def file_source(
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


def check_labels(where: Path, labels: np.ndarray, num_classes: int) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(f"{where}: labels outside 0-{num_classes - 1}")


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def loadmat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        return dict(loadmat(path, squeeze_me=True))  # squeezed: 1-element arrays become scalars
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: cannot read MATLAB file ({exc})") from exc
