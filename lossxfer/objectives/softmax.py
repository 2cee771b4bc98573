"""Softmax cross-entropy: plain with a temperature, and with label smoothing (docs/method.md §1)."""

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
    """Cross-entropy of softmax(z / temperature); temperature = 1 is the paper default."""

    name = "softmax"
    reference = "Kornblith et al. 2021, Table 1 (the baseline)"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, head: nn.Module) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(logits / self.temperature, targets)


@register
@dataclasses.dataclass(frozen=True)
class LabelSmoothing(Objective):
    """Cross-entropy against targets (1−alpha)·onehot + alpha/K, times 1/(1−alpha) if rescale."""

    name = "label_smoothing"
    reference = "Szegedy et al. 2016; Kornblith et al. 2021, Table 1"
    alpha: float = 0.1
    # The released code weights the loss by 1/(1−α) (docs/method.md §1), so the paper's numbers
    # were trained with it: default True. It only rescales the gradient (the effective learning
    # rate and its balance with weight decay), not the minimiser of the loss.
    rescale: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.alpha < 1:
            raise ValueError(f"alpha must be in [0, 1), got {self.alpha}")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, head: nn.Module) -> torch.Tensor:
        import torch.nn.functional as F

        # torch's label_smoothing is exactly the target (1−α)t + α/K of docs/method.md §1.
        xent = F.cross_entropy(logits, targets, label_smoothing=self.alpha)
        return xent / (1 - self.alpha) if self.rescale else xent
