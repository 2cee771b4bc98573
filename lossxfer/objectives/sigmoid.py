"""Sigmoid (one-vs-all binary) cross-entropy (docs/method.md §1, `sigmoid`)."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from lossxfer.objectives.base import Objective, register

if TYPE_CHECKING:
    import torch
    from torch import nn


@register
@dataclasses.dataclass(frozen=True)
class Sigmoid(Objective):
    """Sum over classes of binary cross-entropy of sigmoid(z_k − log K); no options."""

    name = "sigmoid"
    reference = "Beyer et al. 2020; Kornblith et al. 2021, Table 1"

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, head: nn.Module) -> torch.Tensor:
        import torch.nn.functional as F

        # As the released code: the −log K shift lives in the loss (same training dynamics as a
        # bias initialised to −log K, as biases are not decayed), so each class starts near
        # probability 1/K. The `logits` layer is z, unshifted; argmax is unchanged.
        num_classes = logits.shape[1]
        onehot = F.one_hot(targets, num_classes).to(logits.dtype)
        per_class = F.binary_cross_entropy_with_logits(
            logits - math.log(num_classes), onehot, reduction="none"
        )
        return per_class.sum(dim=1).mean()
