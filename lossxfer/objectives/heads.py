"""Final layers for objectives whose head is not a plain linear layer (imports torch).

Imported lazily inside `build_head`. Both heads subclass nn.Linear so every objective's head
keeps the state-dict keys `weight` (K × D) and `bias` (K), and the paper initialisation
(docs/method.md §2). The head's output is the `logits` layer that extraction hooks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def paper_init(layer: nn.Linear) -> nn.Linear:
    """Weights N(0, 0.01²), bias 0: the final-layer initialisation of docs/method.md §2."""
    nn.init.normal_(layer.weight, mean=0.0, std=0.01)
    nn.init.zeros_(layer.bias)
    return layer


class DropoutLinear(nn.Linear):
    """Linear layer on dropout(x): penultimate dropout in training only (docs/method.md §1).

    Inverted dropout (kept units scaled by 1/keep_prob), as tf.nn.dropout in the released code,
    so evaluation is the plain linear layer.
    """

    def __init__(self, in_features: int, out_features: int, keep_prob: float) -> None:
        super().__init__(in_features, out_features)
        self.keep_prob = keep_prob
        paper_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.dropout(x, p=1.0 - self.keep_prob, training=self.training))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, keep_prob={self.keep_prob}"


class CosineLinear(nn.Linear):
    """Cosine-softmax logits (docs/method.md §1 `cosine_softmax`), returned already scaled by 1/τ.

    paper:    z_k = cos(x, W_k) / τ + b_k      (x and each class row W_k L2-normalised)
    released: z_k = (x · W_k/‖W_k‖ + b_k) / τ  (only W_k normalised; bias divided by τ too)

    Norms are clamped at 1e-12 (F.normalize), so an all-zero x (every unit dead) gives
    cos = 0 instead of NaN.
    """

    def __init__(self, in_features: int, out_features: int, tau: float, variant: str) -> None:
        super().__init__(in_features, out_features)
        self.tau = tau
        self.variant = variant
        paper_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.normalize(self.weight, dim=1)
        if self.variant == "released":
            return F.linear(x, weight, self.bias) / self.tau
        return F.linear(F.normalize(x, dim=1), weight) / self.tau + self.bias

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tau={self.tau}, variant={self.variant}"
