"""What the three probes share: features on the compute device, accuracies, the choice rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Features:
    """Rows of one layer on the compute device, with their original integer labels."""

    x: torch.Tensor  # (n, D)
    y: torch.Tensor  # (n,) int64 labels as stored (not re-indexed)

    def __len__(self) -> int:
        return len(self.y)

    def rows(self, mask: torch.Tensor) -> Features:
        return Features(self.x[mask], self.y[mask])

    def cat(self, other: Features) -> Features:
        return Features(torch.cat([self.x, other.x]), torch.cat([self.y, other.y]))


def accuracies(pred: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(top-1, mean per-class accuracy); the mean runs over the classes present in `y`."""
    correct = (pred == y).double()
    _, cls = torch.unique(y, return_inverse=True)
    per_class = torch.zeros(int(cls.max()) + 1, dtype=torch.float64, device=y.device)
    per_class.index_add_(0, cls, correct)
    per_class /= torch.bincount(cls).double()
    return float(correct.mean()), float(per_class.mean())


def first_best(scores: Sequence[float]) -> int:
    """Index of the best score; ties go to the earliest candidate, so callers order candidates
    by preference (strongest regularisation first, largest k first)."""
    best = max(scores)
    return next(i for i, s in enumerate(scores) if s == best)


LAMBDA_TIE_RULE = "highest validation top-1; ties go to the strongest regularisation (largest λ)"


def standardized(fit: Features, other: Features) -> tuple[Features, Features]:
    """Both sets scaled by the per-feature mean and sd of `fit` (constant features: sd 1)."""
    mean, sd = fit.x.mean(0), fit.x.std(0, correction=0)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    return Features((fit.x - mean) / sd, fit.y), Features((other.x - mean) / sd, other.y)
