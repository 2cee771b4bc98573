"""Softmax cross-entropy with a temperature (REFERENCE.md §1, `softmax`)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from lossxfer.objectives.base import Objective, register

if TYPE_CHECKING:
    import torch
    from torch import nn


@register
@dataclasses.dataclass(frozen=True)
class Softmax(Objective):
    """Cross-entropy of softmax(z / T); T = 1 is the paper default."""

    name = "softmax"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, head: nn.Module) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(logits / self.temperature, targets)
