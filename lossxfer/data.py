"""Dataset specs, splits and class subsets (docs/cli.md).

A data spec is a string: `digits`, `synthetic[:k=v,...]`, or `NAME[:ROOT]` for a file-backed
dataset (`cifar10:ROOT`, `mnist`, ..., `idx:DIR`, `imagefolder:PATH`; without ROOT, the caller's
default root + NAME). The sources themselves are in `datasets.py`. Loading a spec gives a `Data`
bundle whose splits are `train`, `val` (a deterministic, seeded fraction held out from train)
and `test`; every row keeps its position in the source split (`index`), the stable sample id
written to activation stores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lossxfer.classes import format_classes
from lossxfer.datasets import DATASETS, DataSpec, ImageDataset, Source, TensorImages
from lossxfer.errors import UsageError
from lossxfer.inputs import InputSpec

if TYPE_CHECKING:
    import numpy as np
    import torch

    from lossxfer.labelmap import LabelMap

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split as the verbs use it: dataset with re-indexed labels, its rows' ids and labels."""

    name: str
    dataset: _Subset
    index: np.ndarray  # int64 position of each row in the source split
    labels: np.ndarray  # int64 re-indexed labels (0..K-1)

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class Data:
    """A loaded, class-subsetted, split dataset; with a label map, labels are superclasses."""

    spec: DataSpec
    classes: list[int]  # source class ids, in the order of the re-indexed labels
    input: InputSpec
    val_fraction: float
    split_seed: int
    source: Source = field(repr=False)
    augment: bool = False
    label_map: LabelMap | None = None

    @property
    def num_classes(self) -> int:
        """How many labels the splits carry (superclasses under a label map)."""
        return len(self.label_map.groups) if self.label_map else len(self.classes)

    def describe(self) -> dict[str, Any]:
        """The provenance record of this data (saved in checkpoints, stores and results)."""
        return {
            "spec": str(self.spec),
            "classes": self.classes,
            "label": self.label,
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed,
            "class_names": self.class_names,
            "label_map": str(self.label_map) if self.label_map else None,
        }

    @property
    def class_names(self) -> list[str] | None:
        """Names of the labels, in label order: the chosen classes' where the source has them;
        a label map's superclass names, else its groups' class names joined by '+'."""
        names = self.source.class_names
        if self.label_map and self.label_map.names:
            return list(self.label_map.names)
        if self.label_map:
            return ["+".join(names[c] for c in g) for g in self.label_map.groups] if names else None
        return [names[c] for c in self.classes] if names else None

    @property
    def label(self) -> str:
        """A short name for tables: 'digits[5-9]'; superclasses as 'digits{0,5|1,6|…}'."""
        full = list(range(self.source.num_classes))
        name = str(self.spec) if self.spec.name in ("imagefolder", "idx") else self.spec.name
        if self.label_map:
            return name + "{" + "|".join(format_classes(g) for g in self.label_map.groups) + "}"
        return name if self.classes == full else f"{name}[{format_classes(self.classes)}]"

    def split(self, name: str, augment: bool | None = None) -> Split:
        """`train`, `val` or `test`; `augment` picks training transforms (default: eval)."""
        import numpy as np

        if name not in SPLITS:
            raise UsageError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
        rows = self._rows(name)
        if name == "val" and len(rows) == 0:
            raise UsageError(
                f"{self.spec}: there is no val split (--val-fraction {self.val_fraction} "
                "holds out no rows)"
            )
        source_split = self._source_split(name)
        if self.label_map:
            remap = np.array(self.label_map.lookup(self.source.num_classes), dtype=np.int64)
        else:
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
        if source_split == "train" and "val" not in self.source.splits:
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
    """A boolean mask selecting a stratified `fraction` of rows for validation.

    Each row gets a key from a 64-bit integer hash of (row id, seed); within each class the rows
    with the smallest keys are held out, never all of a class. So the split depends only on
    (rows, labels, fraction, seed) — not on numpy's RNG streams, nor on which other classes are
    loaded: a class subset's val rows are the full dataset's val rows of those classes.
    """
    import numpy as np

    keys = _splitmix64(rows.astype(np.uint64) ^ _splitmix64(np.array([seed % 2**64], np.uint64)))
    order = np.lexsort((keys, labels))  # by class, then by key
    classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    take = np.minimum(np.round(counts * fraction), counts - 1)
    cls = np.searchsorted(classes, labels[order])
    rank = np.arange(len(rows)) - starts[cls]
    mask = np.zeros(len(rows), dtype=bool)
    mask[order[rank < take[cls]]] = True
    return mask


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a fixed, well-mixed bijection of uint64 (wrapping arithmetic)."""
    import numpy as np

    x = x.astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


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

        if not isinstance(self.base, TensorImages) or not isinstance(
            self.transform, (Normalize, type(None))
        ):
            return None
        batch = self.base.batch(self.rows)
        if self.transform is not None:
            batch = self.transform(batch)
        return batch, torch.from_numpy(self.labels)


def load_data(
    spec: str | DataSpec,
    classes: Sequence[int] | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    download: bool = False,
    label_map: str | None = None,
) -> Data:
    """Load a dataset by spec, pick a class subset, and hold out a validation fraction.

    `label_map` (docs/cli.md, `--label-map`) must map every chosen class (default: all).
    """
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
    mapping = None
    if label_map is not None:
        from lossxfer.labelmap import parse_label_map

        mapping = parse_label_map(label_map)
        mapping.check(chosen, source.num_classes, spec)
    return Data(
        spec, sorted(chosen), source.input, val_fraction, split_seed, source, label_map=mapping
    )


def with_classes(data: Data, classes: Sequence[int]) -> Data:
    """The same loaded data restricted to other classes (no reloading), without a label map."""
    return replace(data, classes=sorted(classes), label_map=None)
