"""Image transforms (docs/method.md §2).

Large images (> 64 px): Inception-style random resized crop (area 0.08–1, aspect 3/4–4/3),
horizontal flip and bicubic resize for training; resize then centre crop keeping 87.5% of the
shorter side for evaluation (the input spec's `interpolation` and `crop`: an imported model's
own contract). Small images (≤ 64 px, e.g. digits, MNIST, CIFAR): normalise only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lossxfer.inputs import SMALL_IMAGE, InputSpec

if TYPE_CHECKING:
    import torch


class Normalize:
    """(x − mean) / std per channel, for one image (C×H×W) or a batch (N×C×H×W)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        import torch

        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_transform(
    spec: InputSpec, augment: bool, tensor_images: bool = False
) -> Callable[[Any], torch.Tensor]:
    """The training (`augment`) or evaluation transform for images of `spec`."""
    if tensor_images and spec.size <= SMALL_IMAGE:
        return Normalize(spec.mean, spec.std)
    import torch
    from torchvision.transforms import v2 as T

    to_tensor = [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    if spec.channels == 1:
        to_tensor.insert(0, T.Grayscale(1))
    elif spec.channels == 3:
        to_tensor.insert(0, T.RGB())
    normalize = T.Normalize(list(spec.mean), list(spec.std))
    interpolation = T.InterpolationMode(spec.interpolation)
    if spec.size <= SMALL_IMAGE:
        steps: list[Any] = [*to_tensor, T.Resize((spec.size, spec.size), antialias=True)]
    elif augment:
        steps = [
            *to_tensor,
            T.RandomResizedCrop(
                spec.size,
                scale=(0.08, 1.0),
                ratio=(3 / 4, 4 / 3),
                interpolation=interpolation,
                antialias=True,
            ),
            T.RandomHorizontalFlip(),
        ]
    else:
        resize = math.floor(spec.size / spec.crop + 1e-6)  # as timm: 224 / 0.95 → 235
        steps = [
            *to_tensor,
            T.Resize(resize, interpolation=interpolation, antialias=True),
            T.CenterCrop(spec.size),
        ]
    return T.Compose([*steps, normalize])
