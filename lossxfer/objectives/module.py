"""An objective as a torch module, for training any backbone outside lossxfer (docs/api.md).

In the paper the objective owns the final layer (cosine softmax and dropout change it, the
final-layer L2 penalises it), so the module holds the head the objective builds and takes
penultimate features: `loss = criterion(features, targets)`. The head and the loss are the
ones `lossxfer train` uses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lossxfer.objectives.base import Objective, make_objective


class ObjectiveLoss(nn.Module):
    """Head + loss of one objective; `head(features)` are the logits z, `predict` the classes."""

    def __init__(self, objective: Objective, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.objective = objective
        self.head = objective.build_head(in_features, num_classes)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch (train mode applies the head's dropout, if any)."""
        return self.objective.loss(self.head(features), targets, self.head)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return self.objective.predict_logits(self.head(features)).argmax(1)

    def extra_repr(self) -> str:
        return self.objective.describe()


def create_objective(
    name: str, in_features: int, num_classes: int, **options: Any
) -> ObjectiveLoss:
    """The objective `name` with `options` (defaults as `list_objectives()` shows them) and its
    head for `in_features` → `num_classes`; an unknown name or option is a UsageError."""
    return ObjectiveLoss(make_objective(name, options), in_features, num_classes)
