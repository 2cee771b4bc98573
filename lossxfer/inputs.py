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
EVAL_CROP = 0.875  # evaluation keeps this fraction of the shorter side (docs/method.md §2)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


@dataclass(frozen=True)
class InputSpec:
    """What the network sees: channels, square size, normalisation, and how images larger than
    SMALL_IMAGE are brought to it for evaluation: resized with `interpolation` so that the
    centre crop of `size` keeps the fraction `crop` of the shorter side (timm's `crop_pct`).
    Models from elsewhere carry their own (lossxfer/zoo.py); older checkpoints, without the two
    fields, get the defaults they were made with."""

    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop: float = EVAL_CROP

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "size": self.size, "mean": self.mean, "std": self.std,
                "interpolation": self.interpolation, "crop": self.crop}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        return cls(
            int(d["channels"]), int(d["size"]), tuple(d["mean"]), tuple(d["std"]),
            str(d.get("interpolation", "bicubic")), float(d.get("crop", EVAL_CROP)),
        )  # fmt: skip


def accepts_any_size(spec: InputSpec) -> bool:
    """Models of large inputs resize and crop every image to their contract (the evaluation
    transform, grey → RGB included): digits or CIFAR go into an imported ImageNet model as
    through its own preprocessing. Small-image models take tensors as they are."""
    return spec.size > SMALL_IMAGE


NATURAL_INPUT = InputSpec(3, NATURAL, IMAGENET_MEAN, IMAGENET_STD)
