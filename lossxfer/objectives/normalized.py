"""Softmax cross-entropy on normalised logits: logit normalisation and cosine softmax.

docs/method.md §1 rows `logit_normalization` and `cosine_softmax`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

from lossxfer.objectives.base import Objective, register

if TYPE_CHECKING:
    import torch
    from torch import nn


def _check_tau(tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")


@register
@dataclasses.dataclass(frozen=True)
class LogitNormalization(Objective):
    """Softmax CE on z / (tau·‖z‖)."""

    name = "logit_normalization"
    tau: float = 0.04

    def __post_init__(self) -> None:
        _check_tau(self.tau)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, head: nn.Module) -> torch.Tensor:
        import torch.nn.functional as F

        # ‖z‖ is clamped at 1e-12 (as tf.nn.l2_normalize in the released code): z = 0 gives
        # uniform probabilities, not NaN.
        return F.cross_entropy(F.normalize(logits, dim=1) / self.tau, targets)


@register
@dataclasses.dataclass(frozen=True)
class CosineSoftmax(Objective):
    """Softmax CE on z_k = cos(x, W_k)/tau + b_k; variant=released: (x·W_k/‖W_k‖ + b_k)/tau."""

    name = "cosine_softmax"
    tau: float = 0.05
    # "paper" (default): docs/method.md §1 as written; "released": the google-research code.
    variant: Literal["paper", "released"] = "paper"

    def __post_init__(self) -> None:
        _check_tau(self.tau)
        if self.variant not in ("paper", "released"):
            raise ValueError(f"variant must be paper or released, got {self.variant!r}")

    def build_head(self, in_features: int, num_classes: int) -> nn.Linear:
        """The head computes z including 1/τ, so the `logits` layer is z as the loss sees it."""
        from lossxfer.objectives.heads import CosineLinear

        return CosineLinear(in_features, num_classes, self.tau, self.variant)
