"""The probe store runner that `lossxfer probe` calls: every requested layer × method of a
store, one `probe` result record.

Each layer is read whole onto the compute device (float64 on the CPU, float32 on a GPU) and
goes through the same checks, splits and registered methods as the array functions
(`probe.arrays`), so both give the same numbers on the same rows.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from lossxfer.backend import resolve_device
from lossxfer.errors import InputError, UsageError
from lossxfer.probe.common import ProbeSplits, as_features, protocol_splits
from lossxfer.probe.methods import DEFAULT_METHODS, PROBES, ProbeOptions, check_methods
from lossxfer.progress import ProgressFn, no_progress
from lossxfer.results import Result, input_record
from lossxfer.separation import default_layers
from lossxfer.store import Store, open_store


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
    mixed: bool = False
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"

    @property
    def options(self) -> ProbeOptions:
        return ProbeOptions(
            self.grid, self.grid_range, self.tol, self.max_iter, self.standardize, self.mixed
        )

    def check(self) -> tuple[str, ...]:
        """Validate every option; the methods to run, in registry order for `all`."""
        self.options.check()
        if not 0 < self.val_fraction < 1:
            raise UsageError(f"--val-fraction must be in (0, 1), got {self.val_fraction:g}")
        return check_methods(self.methods)


def check_store(store: Store) -> None:
    """The protocol needs non-empty train and test splits."""
    for split in ("train", "test"):
        if split not in store.splits:
            raise InputError(f"{store.path}: no {split!r} split; the probe needs train and test")
        if store.num_rows(split) == 0:
            raise InputError(f"{store.path}: the {split!r} split has no rows")


def load_layer(
    store: Store,
    layer: str,
    val_fraction: float,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[ProbeSplits, str]:
    """One layer's protocol rows (the store's val split, else held out of train) and their
    source, checked as the array functions check theirs."""

    def read(split: str) -> Any:
        where = f"{store.path}: /{split}/{layer}"
        return as_features(where, store.read(split, layer), store.labels(split), device, dtype)

    has_val = "val" in store.splits and store.num_rows("val") > 0
    val = read("val") if has_val else None
    where = f"{store.path}: layer {layer!r}"
    return protocol_splits(where, read("train"), read("test"), val, val_fraction, seed)


def run_probe(config: ProbeConfig, progress: ProgressFn = no_progress) -> Result:
    """Probe every requested layer with every requested method; one `probe` result record."""
    methods = config.check()
    started = time.perf_counter()
    device = resolve_device(config.device)
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    layers_out: dict[str, dict[str, Any]] = {}
    seconds: dict[str, dict[str, float]] = {}
    rows: dict[str, int] = {}
    dims: dict[str, int] = {}
    val_source = ""
    with open_store(config.store) as store:
        check_store(store)
        if config.layers == ("all",):
            layers = tuple(store.layers("train"))
        else:
            layers = config.layers or default_layers(store, "train")
        if len(set(layers)) != len(layers):
            raise UsageError(f"--layer: repeated layer in {', '.join(layers)}")
        for layer in layers:
            splits, val_source = load_layer(
                store, layer, config.val_fraction, config.seed, device, dtype
            )
            layers_out[layer], seconds[layer] = {}, {}
            dims[layer] = splits.fit.x.shape[1]
            for method in methods:
                tick = time.perf_counter()
                fit = PROBES.get(method)(splits, config.options, progress, f"{layer}: {method}")
                layers_out[layer][method] = fit.to_dict()
                seconds[layer][method] = time.perf_counter() - tick
            rows.update(zip(splits._fields, map(len, splits), strict=True))
        attrs = store.attrs
    model = attrs.get("model")
    resolved = replace(config, layers=tuple(layers), methods=methods)
    return Result(
        kind="probe",
        metrics={"layers": layers_out, "dims": dims, "rows": rows, "val_source": val_source},
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
