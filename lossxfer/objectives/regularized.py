"""Softmax cross-entropy with a regulariser: final-layer L2, penultimate dropout, logit penalty.

docs/method.md §1 rows `extra_final_layer_l2`, `dropout`, `logit_penalty`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from lossxfer.objectives.base import Objective, register

if TYPE_CHECKING:
    import torch
    from torch import nn


@register
@dataclasses.dataclass(frozen=True)
class ExtraFinalLayerL2(Objective):
    """Softmax CE + lam·½‖W‖²_F on the final weight matrix (not bias), beyond weight decay."""

    name = "extra_final_layer_l2"
    lam: float = 8e-4  # λ; the CLI key is `lam` (`lambda` is a Python keyword)

    def __post_init__(self) -> None:
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, head: nn.Module) -> torch.Tensor:
        from torch import nn

        if not isinstance(head, nn.Linear):
            raise TypeError(f"{self.name} needs a linear head, got {type(head).__name__}")
        # Added once per batch, like tf.nn.l2_loss in the released code: λ · ½ Σ W².
        return super().loss(logits, targets, head) + self.lam * 0.5 * head.weight.square().sum()


@register
@dataclasses.dataclass(frozen=True)
class Dropout(Objective):
    """Softmax CE with dropout on the penultimate features x in training (keep_prob kept)."""

    name = "dropout"
    reference = "Srivastava et al. 2014; Kornblith et al. 2021, Table 1"
    keep_prob: float = 0.7

    def __post_init__(self) -> None:
        if not 0 < self.keep_prob <= 1:
            raise ValueError(f"keep_prob must be in (0, 1], got {self.keep_prob}")

    def build_head(self, in_features: int, num_classes: int) -> nn.Linear:
        from lossxfer.objectives.heads import DropoutLinear

        return DropoutLinear(in_features, num_classes, self.keep_prob)


@register
@dataclasses.dataclass(frozen=True)
class LogitPenalty(Objective):
    """Softmax CE + beta·½‖z‖² per example (batch mean)."""

    name = "logit_penalty"
    beta: float = 6e-4

    def __post_init__(self) -> None:
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, head: nn.Module) -> torch.Tensor:
        penalty = 0.5 * logits.square().sum(dim=1).mean()
        return super().loss(logits, targets, head) + self.beta * penalty
