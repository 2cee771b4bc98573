"""Fine-tuning (docs/method.md §4): a checkpoint's backbone, a new head, a lr × weight-decay grid.

Each grid cell trains the whole network (or, with `freeze_backbone`, the head only, the backbone
in eval mode: the SGD linear probe) on the train split with `train.fit` — the same loop as
`train`, so resume, preemption and divergence behave the same — and is scored on validation.
The best cell is retrained on train+val (`refit`) and evaluated on test.

Run directory (lossxfer/rundir.py): model.safetensors and finetune.json once the run has
completed; until then cells/ with one state file per cell plus grid.state (JSON: the scores so
far), so `--resume` skips finished cells and continues the current one. Not `.json`: it is
resumable state, not a result record for `report` to find. cells/ is removed at completion.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lossxfer.backend import resolve_device
from lossxfer.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from lossxfer.data import Data, Split, load_data
from lossxfer.distributed import Dist
from lossxfer.errors import DivergedError, InputError, UsageError
from lossxfer.fsio import require_file, sha256, write_text_atomic
from lossxfer.inputs import accepts_any_size
from lossxfer.loop import FitResult, OptimConfig, RunOptions, evaluate, fit
from lossxfer.nets import Network
from lossxfer.objectives import Objective, make_objective
from lossxfer.progress import ProgressFn
from lossxfer.results import Result, input_record, load_result
from lossxfer.rundir import Start, check_same, finetune_dir


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything `lossxfer finetune` does; saved in the fine-tuned checkpoint and the record.

    Defaults are ours, sized for small data: a 3 × 2 grid, 10 epochs of cosine decay without
    warm-up, 20% of train held out for choosing the cell.
    """

    checkpoint: str
    data: str
    classes: tuple[int, ...] | None = None
    label_map: str | None = None  # superclasses as the target task (lossxfer.labelmap)
    loss: str = "softmax"
    loss_opts: dict[str, Any] = field(default_factory=dict)
    lrs: tuple[float, ...] = (0.1, 0.01, 0.001)
    weight_decays: tuple[float, ...] = (0.0, 1e-4)
    epochs: int = 10
    steps: int | None = None
    batch_size: int = 128
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    val_fraction: float = 0.2
    split_seed: int = 0
    refit: bool = True
    freeze_backbone: bool = False
    run: RunOptions = field(default_factory=RunOptions)

    def optim(self, lr: float, weight_decay: float) -> OptimConfig:
        """One grid cell's optimisation: SGD with Nesterov momentum and cosine decay."""
        return OptimConfig(
            epochs=self.epochs,
            steps=self.steps,
            batch_size=self.batch_size,
            lr=lr,
            momentum=self.momentum,
            nesterov=True,
            weight_decay=weight_decay,
            warmup_epochs=self.warmup_epochs,
        )

    def check(self) -> None:
        if not self.lrs or not self.weight_decays:
            raise UsageError("--lr and --weight-decay need at least one value each")
        if self.val_fraction <= 0:
            raise UsageError("--val-fraction must be > 0: the grid is chosen on validation")
        for lr in self.lrs:
            for wd in self.weight_decays:
                self.optim(lr, wd).check()


def identity(config: dict[str, Any], source_sha256: str) -> dict[str, Any]:
    """What determines the results, from a config dict (`asdict(FinetuneConfig)` or a saved
    record's) and the source checkpoint's checksum: --resume requires it unchanged."""
    keep = {k: v for k, v in config.items() if k not in ("run", "resolved")}
    flat = {**keep, "seed": config.get("run", {}).get("seed"), "source_sha256": source_sha256}
    return dict(json.loads(json.dumps(flat)))


def finetune(
    config: FinetuneConfig,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: ProgressFn | None = None,
    dist: Dist | None = None,
) -> Result:
    """Sweep the grid, pick the validation argmax, refit on train+val, evaluate on test.

    `resume` and `force` as for `train.train`. Under torchrun (`dist`) every cell trains with
    DistributedDataParallel (`loop.fit`: per-process batch, learning rates × world size) and is
    scored on all ranks' shares of the rows; rank 0 alone writes.
    """
    dist = dist or Dist()
    config.check()
    paths = finetune_dir(out)
    start = Start(dist.from_main(paths.begin(resume, force)))
    model_path, record_path, cells = paths.model, paths.record, paths.state
    source_sha = sha256(require_file(config.checkpoint))
    run_identity = identity(asdict(config), source_sha)
    if start is Start.DONE:
        record = load_result(record_path)
        check_same(record_path, identity(record.config, record_source(record)), run_identity)
        paths.done()
        return record
    objective = make_objective(config.loss, config.loss_opts)  # a typo fails before any work
    source, meta = load_checkpoint(config.checkpoint)
    data = target_data(config, meta)
    device = resolve_device(config.run.device)
    if dist.is_main:
        if start is Start.FRESH:
            paths.clear()  # --force, or stale files: never resume from another run's state
        cells.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    started = time.perf_counter()

    def cell(name: str, lr: float, wd: float, split: Split) -> FitResult:
        """Train one cell from the checkpoint; resumes it when its state file exists."""
        state = cells / f"{name}.state.safetensors"
        cell_identity = {**run_identity, "cell": name, "rows": len(split), "lr": lr, "wd": wd}
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.run.seed)
            network = with_new_head(source, objective, data.num_classes)
            return fit(
                network,
                objective,
                split,
                config.optim(lr, wd),
                config.run,
                device=device,
                identity=cell_identity,
                state_path=state,
                resume=bool(dist.from_main(state.exists())),  # rank 0's files decide
                freeze_backbone=config.freeze_backbone,
                progress=progress,
                label=f"{name} lr={lr:g} wd={wd:g}",
                dist=dist,
            )

    grid_path = cells / "grid.state"
    resuming = start is Start.CONTINUE and grid_path.exists()
    grid = load_grid(grid_path, run_identity) if resuming else []
    train_split, val_split = data.split("train", augment=True), data.split("val")
    cells_todo = [(lr, wd) for lr in config.lrs for wd in config.weight_decays]
    for index, (lr, wd) in enumerate(cells_todo):
        if index < len(grid):
            continue  # finished before an interruption
        entry: dict[str, Any] = {"lr": lr, "weight_decay": wd, "val_top1": None, "diverged": False}
        try:
            done = cell(f"cell{index}", lr, wd, train_split)
            scores = evaluate(done.eval_network, objective, val_split, device, dist=dist)
            entry["val_top1"] = scores["top1"]
        except DivergedError as exc:
            entry["diverged"] = True
            entry["error"] = str(exc)
        grid.append(entry)
        document = {"identity": run_identity, "cells": grid}
        if dist.is_main:
            write_text_atomic(grid_path, json.dumps(document, indent=1), force=True)
    chosen_index = choose(grid)
    chosen = {"lr": grid[chosen_index]["lr"], "weight_decay": grid[chosen_index]["weight_decay"]}
    if config.refit:
        final = cell("refit", chosen["lr"], chosen["weight_decay"], train_plus_val(data))
    else:  # the chosen cell's finished state: loads without training
        final = cell(f"cell{chosen_index}", chosen["lr"], chosen["weight_decay"], train_split)
    scores = evaluate(final.eval_network, objective, data.split("test"), device, dist=dist)
    metrics: dict[str, Any] = {
        "test_top1": scores["top1"],
        "test_top5": scores["top5"],
        "val_grid": grid,
        "chosen": chosen,
        "refit": config.refit,
        "freeze_backbone": config.freeze_backbone,
        "steps": final.steps,
        "loss_curve": final.loss_curve,
    }
    training = {
        **final.training,  # the refit's (or the chosen cell's) resolved optimisation
        "refit": config.refit,
        "lr_grid": list(config.lrs),
        "weight_decay_grid": list(config.weight_decays),
    }
    saved_config = {**asdict(config), "resolved": {**training, **final.runtime}}
    out_meta = CheckpointMeta(
        arch=meta.arch,
        objective=config.loss,
        objective_opts=objective.options(),
        num_classes=data.num_classes,
        classes=data.classes,
        input=meta.input,
        data=data.describe(),
        seed=config.run.seed,
        training=training,
        config=saved_config,
        metrics=metrics,
        extra={
            "source_checkpoint": str(config.checkpoint),
            "source_sha256": source_sha,
            "source_objective": meta.objective,
            "source_objective_opts": meta.objective_opts,
        },
    )
    if dist.is_main:
        save_checkpoint(model_path, final.eval_network, out_meta, force=True)
    result = Result(
        kind="finetune",
        metrics=metrics,
        config=saved_config,
        inputs=[input_record(config.checkpoint)],
        model=meta.provenance(source_sha),
        dataset=data.describe(),
        timing={"wall_s": time.perf_counter() - started},
    )
    if dist.is_main:
        result.write(record_path, force=True)  # last: the run is complete from here on
        paths.clear_state()
    return result


def record_source(record: Result) -> str:
    """The source checkpoint's checksum that a finetune record was made from."""
    inputs = record.inputs or [{}]
    return str(inputs[0].get("sha256", ""))


def load_grid(path: Path, expected: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells finished before an interruption, if they belong to this configuration."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        saved, cells = document["identity"], list(document["cells"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{path}: not a lossxfer fine-tuning grid") from None
    if not isinstance(saved, dict):
        raise InputError(f"{path}: not a lossxfer fine-tuning grid")
    check_same(path, saved, expected)
    return cells


def target_data(config: FinetuneConfig, meta: CheckpointMeta) -> Data:
    """The target data, fed to the backbone as it was trained: the checkpoint's input spec."""
    classes = list(config.classes) if config.classes is not None else None
    data = load_data(
        config.data, classes, config.val_fraction, config.split_seed, label_map=config.label_map
    )
    if accepts_any_size(meta.input):  # resized, cropped, grey → RGB by the eval transform
        return dataclasses.replace(data, input=meta.input)
    if data.input.channels != meta.input.channels:
        raise InputError(
            f"--data {config.data}: {data.input.channels}-channel images, the checkpoint's "
            f"network takes {meta.input.channels}"
        )
    if data.source.tensor_images and data.input.size != meta.input.size:
        raise InputError(
            f"--data {config.data}: {data.input.size} px images, the checkpoint's network "
            f"takes {meta.input.size} px"
        )
    return dataclasses.replace(data, input=meta.input)


def with_new_head(source: Network, objective: Objective, num_classes: int) -> Network:
    """A copy of the source backbone under a freshly initialised head for the target classes."""
    backbone = copy.deepcopy(source.backbone)
    return Network(backbone, objective.build_head(backbone.feature_dim, num_classes))


def choose(grid: list[dict[str, Any]]) -> int:
    """Index of the validation argmax (the first of ties); every cell diverged → exit 5."""
    scored = [(e["val_top1"], -i) for i, e in enumerate(grid) if not e["diverged"]]
    scored = [s for s in scored if s[0] is not None and math.isfinite(s[0])]
    if not scored:
        raise DivergedError("fine-tuning diverged in every grid cell; try smaller --lr values")
    return -max(scored)[1]


def train_plus_val(data: Data) -> Split:
    """Train and val rows together (never test): the refit's training set."""
    if "val" not in data.source.splits:  # val was carved from train: all of train is both
        return dataclasses.replace(data, val_fraction=0.0).split("train", augment=True)
    import numpy as np
    from torch.utils.data import ConcatDataset

    train, val = data.split("train", augment=True), data.split("val", augment=True)
    joined: Any = ConcatDataset([train.dataset, val.dataset])  # type: ignore[list-item]
    index = np.concatenate([train.index, val.index])
    return Split("train+val", joined, index, np.concatenate([train.labels, val.labels]))
