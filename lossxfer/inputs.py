"""The input contract: what a network sees (channels, square size, normalisation).

Shared by the dataset sources (what they give), the transforms (what they make of it), the
architectures and checkpoints (what a model was trained on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_IMAGE = 64  # at most this many pixels a side: normalise-only transforms, CIFAR stem
NATURAL = 224  # what the big natural-image sets are cropped to (docs/method.md §2)


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
