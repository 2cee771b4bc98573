"""What the three probes share: features on the compute device, accuracies, the choice rule."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from lossxfer.errors import InputError


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


class ProbeSplits(NamedTuple):
    """The rows each step of the protocol uses; `refit` is fit + val."""

    fit: Features
    val: Features
    refit: Features
    test: Features


ONE_THREAD_BELOW = 1 << 24  # multiply-adds per X·Wᵀ under which one thread is faster


@contextlib.contextmanager
def one_thread_if_small(data: Features) -> Iterator[None]:
    """One CPU thread for small problems (rows × width × classes): there, intra-op threads cost
    more than they save, and on a shared node they spin (3200 × 128 × 20 logistic sweep on 2
    busy cores: 0.4 s on one thread, 20 s on two)."""
    before = torch.get_num_threads()
    work = data.x.numel() * len(torch.unique(data.y))
    if data.x.device.type == "cpu" and work < ONE_THREAD_BELOW:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def as_features(where: str, x: Any, y: Any, device: torch.device, dtype: torch.dtype) -> Features:
    """numpy, torch or CuPy rows and integer labels → checked `Features` on `device`."""
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    if xt.ndim != 2 or len(xt) == 0:
        raise InputError(f"{where}: expected rows × features, got shape {tuple(xt.shape)}")
    if yt.ndim != 1 or len(yt) != len(xt):
        raise InputError(f"{where}: expected {len(xt)} labels, got shape {tuple(yt.shape)}")
    if yt.is_floating_point() or yt.is_complex() or yt.dtype == torch.bool:
        raise InputError(f"{where}: labels must be integers, got {yt.dtype}")
    xt = xt.to(device=device, dtype=dtype)
    bad = int(xt.numel() - torch.isfinite(xt).sum())
    if bad:
        raise InputError(f"{where} has {bad} NaN or infinite values")
    return Features(xt, yt.to(device=device, dtype=torch.int64))


def protocol_splits(
    where: str, train: Features, test: Features, val: Features | None, fraction: float, seed: int
) -> tuple[ProbeSplits, str]:
    """(fit, val, refit, test) and where val came from. Without `val`, a stratified `fraction`
    of train, chosen by row position and `seed` (`data.held_out`), is held out for it."""
    from lossxfer.data import held_out

    if val is not None:
        splits, source = ProbeSplits(train, val, train.cat(val), test), "val split"
    else:
        labels = train.y.cpu().numpy()
        held = torch.from_numpy(held_out(np.arange(len(labels)), labels, fraction, seed))
        if not held.any():
            raise InputError(f"{where}: no val rows given and a {fraction:g} hold-out is empty")
        held = held.to(train.y.device)
        splits = ProbeSplits(train.rows(~held), train.rows(held), train, test)
        source = "held out from train"
    if len({f.x.shape[1] for f in splits}) > 1:
        raise InputError(f"{where} has different widths across splits")
    if len(torch.unique(splits.fit.y)) < 2:
        raise InputError(f"{where}: fewer than 2 classes to fit")
    return splits, source
