"""Dataset sources: what each `--data` name reads from disk (docs/formats.md, docs/cli.md).

`base` holds the data spec, the `DATASETS` registry and what a loader returns; importing this
package registers every loader, small sets first (the registry lists them in this order).
"""

# isort: off
from lossxfer.datasets import small  # noqa: F401  digits, synthetic, MNIST family, CIFAR, ...
from lossxfer.datasets import natural  # noqa: F401  food101 ... imagefolder

# isort: on
from lossxfer.datasets.base import (
    DATASETS,
    IN_MEMORY,
    DataSpec,
    ImageDataset,
    ImageFiles,
    Source,
    TensorImages,
)
from lossxfer.datasets.small import read_idx

__all__ = [
    "DATASETS",
    "IN_MEMORY",
    "DataSpec",
    "ImageDataset",
    "ImageFiles",
    "Source",
    "TensorImages",
    "read_idx",
]
