"""Transfer probes of stored features (REFERENCE.md §4): linear, ridge and kNN.

The protocol is the same for every method: fit on the `fit` rows (the store's train split, or
train minus a held-out fraction when the store has no val split), choose the hyperparameter
on the validation rows, fit again on train + val (`refit`) with the chosen value and report
accuracy on the test split. Every layer is loaded whole onto the compute device (float64 on
the CPU, float32 on a GPU); the three solvers live in the submodules.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from lossxfer.backend import resolve_device
from lossxfer.data import held_out
from lossxfer.errors import InputError, UsageError
from lossxfer.probe.common import Features
from lossxfer.probe.knn import knn_probe
from lossxfer.probe.linear import lambda_grid, linear_probe
from lossxfer.probe.ridge import ridge_probe
from lossxfer.progress import ProgressFn, no_progress
from lossxfer.results import Result, input_record
from lossxfer.separation import default_layers
from lossxfer.store import Store, open_store

LOG = logging.getLogger("lossxfer")
METHODS = ("linear", "ridge", "knn")
DEFAULT_METHODS = ("linear", "knn")  # the paper's two fixed-feature probes; ridge is a screen


@dataclass(frozen=True)
class ProbeConfig:
    """What to probe and how. Empty `layers` means `penultimate` (else the store's last layer),
    `("all",)` every layer; `methods` may hold `all`. `val_fraction` and `seed` apply only to a
    store without a val split."""

    store: str
    layers: tuple[str, ...] = ()
    methods: tuple[str, ...] = DEFAULT_METHODS
    grid: int = 45
    grid_range: tuple[float, float] = (1e-6, 1e5)
    tol: float = 1e-6
    max_iter: int = 1000
    standardize: bool = False
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"

    def check(self) -> None:
        lo, hi = self.grid_range
        if self.grid < 1:
            raise UsageError(f"--grid must be at least 1, got {self.grid}")
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise UsageError(f"--grid-range {lo:g},{hi:g}: expected 0 < LO <= HI")
        if not self.tol > 0:
            raise UsageError(f"--tol must be positive, got {self.tol:g}")
        if self.max_iter < 1:
            raise UsageError(f"--max-iter must be at least 1, got {self.max_iter}")
        if not 0 < self.val_fraction < 1:
            raise UsageError(f"--val-fraction must be in (0, 1), got {self.val_fraction:g}")
        unknown = sorted(set(self.methods) - {*METHODS, "all"})
        if unknown:
            raise UsageError(f"--method {unknown[0]!r}: choose from {', '.join(METHODS)} or all")


@dataclass(frozen=True)
class Roles:
    """Which store rows play which part: `held` marks train rows moved to validation (only when
    the store has no val split, else None)."""

    held: np.ndarray | None

    @property
    def val_source(self) -> str:
        return "val split" if self.held is None else "held out from train"


def roles(store: Store, val_fraction: float, seed: int) -> Roles:
    """Check the splits the protocol needs; carve validation from train if there is no val."""
    for split in ("train", "test"):
        if split not in store.splits:
            raise InputError(f"{store.path}: no {split!r} split; the probe needs train and test")
        if store.num_rows(split) == 0:
            raise InputError(f"{store.path}: the {split!r} split has no rows")
    if "val" in store.splits and store.num_rows("val") > 0:
        return Roles(None)
    labels = store.labels("train")
    held = held_out(np.arange(len(labels)), labels, val_fraction, seed)
    if not held.any():
        raise InputError(
            f"{store.path}: no val split and --val-fraction {val_fraction:g} holds out no rows"
        )
    return Roles(held)


def load_layer(
    store: Store, layer: str, roles: Roles, device: torch.device, dtype: torch.dtype
) -> tuple[Features, Features, Features, Features]:
    """(fit, val, refit, test) features of one layer, checked finite and with ≥ 2 classes."""

    def read(split: str) -> Features:
        x = store.read(split, layer)
        bad = int(x.size - np.isfinite(x).sum())
        if bad:
            raise InputError(f"{store.path}: /{split}/{layer} has {bad} NaN or infinite values")
        y = torch.from_numpy(store.labels(split)).to(device)
        return Features(torch.from_numpy(x).to(device=device, dtype=dtype), y)

    train, test = read("train"), read("test")
    if roles.held is None:
        val = read("val")
        fit, refit = train, train.cat(val)
    else:
        held = torch.from_numpy(roles.held).to(device)
        fit, val, refit = train.rows(~held), train.rows(held), train
    widths = {f.x.shape[1] for f in (fit, val, test)}
    if len(widths) > 1:
        raise InputError(f"{store.path}: layer {layer!r} has different widths across splits")
    if len(torch.unique(fit.y)) < 2:
        raise InputError(f"{store.path}: layer {layer!r}: fewer than 2 classes to fit")
    return fit, val, refit, test


def run_probe(config: ProbeConfig, progress: ProgressFn = no_progress) -> Result:
    """Probe every requested layer with every requested method; one `probe` result record."""
    config.check()
    started = time.perf_counter()
    methods = METHODS if "all" in config.methods else tuple(dict.fromkeys(config.methods))
    device = resolve_device(config.device)
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    grid = lambda_grid(config.grid, *config.grid_range)
    layers_out: dict[str, dict[str, Any]] = {}
    seconds: dict[str, dict[str, float]] = {}
    rows: dict[str, int] = {}
    dims: dict[str, int] = {}
    with open_store(config.store) as store:
        plan = roles(store, config.val_fraction, config.seed)
        if config.layers == ("all",):
            layers = tuple(store.layers("train"))
        else:
            layers = config.layers or default_layers(store, "train")
        if len(set(layers)) != len(layers):
            raise UsageError(f"--layer: repeated layer in {', '.join(layers)}")
        for layer in layers:
            fit, val, refit, test = load_layer(store, layer, plan, device, dtype)
            layers_out[layer] = {}
            dims[layer] = fit.x.shape[1]
            seconds[layer] = {}
            for method in methods:
                tick = time.perf_counter()
                label = f"{layer}: {method}"
                if method == "linear":
                    out = linear_probe(
                        fit,
                        val,
                        refit,
                        test,
                        grid,
                        tol=config.tol,
                        max_iter=config.max_iter,
                        standardize=config.standardize,
                        progress=progress,
                        label=label,
                    )
                    if not out["converged"]:
                        LOG.warning("%s: the refit stopped before max|∇| <= tol", label)
                elif method == "ridge":
                    out = ridge_probe(
                        fit, val, refit, test, grid, config.standardize, progress, label=label
                    )
                else:
                    out = knn_probe(fit, val, refit, test, progress, label=label)
                layers_out[layer][method] = out
                seconds[layer][method] = time.perf_counter() - tick
            rows.update(fit=len(fit), val=len(val), refit=len(refit), test=len(test))
        attrs = store.attrs
    model = attrs.get("model")
    resolved = replace(config, layers=tuple(layers), methods=methods)
    return Result(
        kind="probe",
        metrics={
            "layers": layers_out,
            "dims": dims,
            "rows": rows,
            "val_source": plan.val_source,
        },
        config=asdict(resolved),
        inputs=[input_record(config.store)],
        model=model if isinstance(model, dict) else {},
        dataset=attrs.get("dataset"),
        timing={
            "wall_s": time.perf_counter() - started,
            "seconds": seconds,
            "device": str(device),
        },
    )


__all__ = ["DEFAULT_METHODS", "METHODS", "ProbeConfig", "Roles", "load_layer", "roles", "run_probe"]
