"""Fine-tuning (REFERENCE.md §4): a checkpoint's backbone, a new head, a lr × weight-decay grid.

Each grid cell trains the whole network (or, with `freeze_backbone`, the head only, the backbone
in eval mode: the SGD linear probe) on the train split with `train.fit` — the same loop as
`train`, so resume, preemption and divergence behave the same — and is scored on validation.
The best cell is retrained on train+val (`refit`) and evaluated on test.

Run directory: model.safetensors, finetune.json, and cells/ with one state file per cell plus
grid.state (JSON: the scores so far), so `--resume` skips finished cells and continues the
current one. Not `.json`: it is resumable state, not a result record for `report` to find.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
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
from lossxfer.fsio import sha256, write_text_atomic
from lossxfer.nets import Network
from lossxfer.objectives import Objective, make_objective
from lossxfer.progress import ProgressFn
from lossxfer.results import Result, input_record
from lossxfer.train import FitResult, OptimConfig, RunOptions, evaluate, fit, guard_run_dir


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything `lossxfer finetune` does; saved in the fine-tuned checkpoint and the record.

    Defaults are ours, sized for small data: a 3 × 2 grid, 10 epochs of cosine decay without
    warm-up, 20% of train held out for choosing the cell.
    """

    checkpoint: str
    data: str
    out: str
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
    resume: bool = False
    force: bool = False

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

    def identity(self, source_sha256: str) -> dict[str, Any]:
        """What determines the results: --resume requires it unchanged."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("out", "resume", "force")}
        run = {"seed": self.run.seed}
        return json.loads(json.dumps({**keep, "run": run, "source_sha256": source_sha256}))

    def check(self) -> None:
        if not self.lrs or not self.weight_decays:
            raise UsageError("--lr and --weight-decay need at least one value each")
        if self.val_fraction <= 0:
            raise UsageError("--val-fraction must be > 0: the grid is chosen on validation")
        for lr in self.lrs:
            for wd in self.weight_decays:
                self.optim(lr, wd).check()


def run_paths(out: str | Path) -> tuple[Path, Path, Path]:
    """model.safetensors, finetune.json and the cells/ folder of a fine-tuning run."""
    folder = Path(out)
    return folder / "model.safetensors", folder / "finetune.json", folder / "cells"


def check_run_dir(out: str | Path, resume: bool, force: bool) -> None:
    """Before any work: refuse to clobber a finished or interrupted run unless told how."""
    model, record, cells = run_paths(out)
    guard_run_dir(out, (model, record), cells, resume, force)


def finetune(
    config: FinetuneConfig, progress: ProgressFn | None = None, dist: Dist | None = None
) -> Result:
    """Sweep the grid, pick the validation argmax, refit on train+val, evaluate on test.

    Under torchrun (`dist`) every cell trains with DistributedDataParallel (`train.fit`:
    per-process batch, learning rates × world size) and is scored on all ranks' shares of the
    rows; rank 0 alone writes.
    """
    dist = dist or Dist()
    config.check()
    check_run_dir(config.out, config.resume, config.force)
    model_path, record_path, cells = run_paths(config.out)
    source, meta = load_checkpoint(config.checkpoint)
    source_sha = sha256(config.checkpoint)
    data = target_data(config, meta)
    objective = make_objective(config.loss, config.loss_opts)
    device = resolve_device(config.run.device)
    if dist.is_main:
        if not config.resume and cells.exists():
            shutil.rmtree(cells)  # --force: start over, never resume from stale state
        cells.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    started = time.perf_counter()
    run_identity = config.identity(source_sha)

    def cell(name: str, lr: float, wd: float, split: Split) -> FitResult:
        """Train one cell from the checkpoint; resumes it when its state file exists."""
        state = cells / f"{name}.state.safetensors"
        identity = {**run_identity, "cell": name, "split_rows": len(split), "lr": lr, "wd": wd}
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
                identity=identity,
                state_path=state,
                resume=bool(dist.from_main(state.exists())),  # rank 0's files decide
                freeze_backbone=config.freeze_backbone,
                progress=progress,
                label=f"{name} lr={lr:g} wd={wd:g}",
                dist=dist,
            )

    grid_path = cells / "grid.state"
    grid = load_grid(grid_path, run_identity) if config.resume and grid_path.exists() else []
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
    out_meta = CheckpointMeta(
        arch=meta.arch,
        objective=config.loss,
        objective_opts=objective.options(),
        num_classes=data.num_classes,
        classes=data.classes,
        input=meta.input,
        data=data.describe(),
        seed=config.run.seed,
        config=asdict(config),
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
        config=asdict(config),
        inputs=[input_record(config.checkpoint)],
        model=meta.provenance(source_sha),
        dataset=data.describe(),
        timing={"wall_s": time.perf_counter() - started},
    )
    if dist.is_main:
        result.write(record_path, force=True)
    return result


def load_grid(path: Path, identity: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells finished before an interruption, if they belong to this configuration."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        saved, cells = document["identity"], list(document["cells"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{path}: not a lossxfer fine-tuning grid") from None
    if saved != identity:
        key = next(k for k in sorted(set(saved) | set(identity)) if saved.get(k) != identity.get(k))
        raise UsageError(
            f"{path}: --resume with a different configuration ({key}: saved "
            f"{saved.get(key)!r}, now {identity.get(key)!r})"
        )
    return cells


def target_data(config: FinetuneConfig, meta: CheckpointMeta) -> Data:
    """The target data, fed to the backbone as it was trained: the checkpoint's input spec."""
    classes = list(config.classes) if config.classes is not None else None
    data = load_data(
        config.data, classes, config.val_fraction, config.split_seed, label_map=config.label_map
    )
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
