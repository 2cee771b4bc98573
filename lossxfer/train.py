"""The `train` verb's library: train a network with one objective into a run directory.

The loop is `loop.fit`, its resumable state `trainstate`, the directory rule `rundir`:
model.safetensors and train.json appear only when the run has completed; until then the run
directory holds state.safetensors, and `--resume` continues, starts, or finds the work done.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lossxfer.backend import resolve_device
from lossxfer.checkpoint import CheckpointMeta, save_checkpoint
from lossxfer.data import load_data
from lossxfer.distributed import Dist
from lossxfer.errors import UsageError
from lossxfer.fsio import sha256
from lossxfer.loop import OptimConfig, RunOptions, evaluate, fit
from lossxfer.models import build_network
from lossxfer.objectives import make_objective
from lossxfer.progress import ProgressFn, Stages
from lossxfer.results import Result, load_result
from lossxfer.rundir import RunDir, Start, check_same, train_dir

__all__ = ["OptimConfig", "RunOptions", "TrainConfig", "identity", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """What `lossxfer train` learns and how it runs; saved in the checkpoint and the record.

    Where it is written and whether it resumes or overwrites are arguments of `train`, not
    configuration: they do not belong in the saved files.
    """

    data: str
    arch: str = "smallcnn"
    loss: str = "softmax"
    loss_opts: dict[str, Any] = field(default_factory=dict)
    classes: tuple[int, ...] | None = None
    label_map: str | None = None  # superclasses to train on (lossxfer.labelmap)
    val_fraction: float = 0.1
    split_seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunOptions = field(default_factory=RunOptions)


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """What determines the trained weights, flat (`epochs`, not `optim.epochs`), from a config
    dict (`asdict(TrainConfig)` or a saved record's): --resume requires it unchanged."""
    skip = {"optim", "run", "resolved", "out", "resume", "force"}
    flat = {k: v for k, v in config.items() if k not in skip}
    flat.update(config.get("optim", {}))
    flat["seed"] = config.get("run", {}).get("seed")
    return dict(json_round_trip(flat))


def json_round_trip(value: Any) -> Any:
    """Tuples become lists, as in a saved file, so that saved and current compare equal."""
    import json

    return json.loads(json.dumps(value))


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: ProgressFn | None = None,
    dist: Dist | None = None,
) -> Result:
    """Train a network into the run directory `out` and return its `train` record.

    `resume`: continue from the saved state, start afresh when there is none, or return the
    finished run's record when it is complete. `force`: start over, discarding what is there.
    Under torchrun (`dist`) every rank trains and evaluates its shard; rank 0 alone writes.
    """
    dist = dist or Dist()
    config.optim.check()
    paths = train_dir(out)
    start = Start(dist.from_main(paths.begin(resume, force)))
    if start is Start.DONE:
        return finished(paths, config)
    objective = make_objective(config.loss, config.loss_opts)  # a typo fails before any work
    stages = Stages()
    classes = list(config.classes) if config.classes is not None else None
    if config.run.workers < 0:
        raise UsageError(f"--workers {config.run.workers}: must be 0 or more")
    data = load_data(
        config.data, classes, config.val_fraction, config.split_seed, label_map=config.label_map
    )
    if data.num_classes < 2:
        raise UsageError(
            f"--classes: {data.describe().get('label', config.data)} has {data.num_classes} "
            "class; a classifier needs at least 2"
        )
    # The evaluation splits, before any training: an empty one must fail now, not after the
    # run has trained (and an empty test split would score 0% silently).
    evaluation = {
        n: data.split(n) for n in (("val", "test") if config.val_fraction > 0 else ("test",))
    }
    for name, split in evaluation.items():
        if len(split) == 0:
            raise UsageError(f"--data {config.data}: the {name} split is empty")
    stages.done("data")
    device = resolve_device(config.run.device)
    if dist.is_main and start is Start.FRESH:
        paths.clear()  # --force, or stale files: never finish on top of another run
    dist.barrier()
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.run.seed)
        network = build_network(config.arch, data.input, objective, data.num_classes)
        done = fit(
            network,
            objective,
            data.split("train", augment=True),
            config.optim,
            config.run,
            device=device,
            identity=identity(asdict(config)),
            state_path=paths.state,
            resume=start is Start.CONTINUE,
            progress=progress,
            dist=dist,
        )
    stages.done("train")
    metrics: dict[str, Any] = {}
    for name, split in evaluation.items():
        scores = evaluate(done.eval_network, objective, split, device, config.run.workers, dist)
        metrics.update({f"{name}_top1": scores["top1"], f"{name}_top5": scores["top5"]})
    metrics.update(loss_curve=done.loss_curve, epochs=len(done.loss_curve), steps=done.steps)
    stages.done("evaluate")
    saved_config = {**asdict(config), "resolved": {**done.training, **done.runtime}}
    meta = CheckpointMeta(
        arch=config.arch,
        objective=config.loss,
        objective_opts=objective.options(),
        num_classes=data.num_classes,
        classes=data.classes,
        input=data.input,
        data=data.describe(),
        seed=config.run.seed,
        training=done.training,
        config=saved_config,
        metrics=metrics,
    )
    if dist.is_main:
        save_checkpoint(paths.model, done.eval_network, meta, force=True)
    result = Result(
        kind="train",
        metrics=metrics,
        config=saved_config,
        model=meta.provenance(sha256(paths.model) if dist.is_main else ""),
        dataset=data.describe(),
        timing={
            "wall_s": time.perf_counter() - started,
            "train_s": done.train_s,
            "images_per_s": (
                done.images * dist.world_size / done.train_s if done.train_s > 0 else None
            ),
            "world_size": dist.world_size,
        },
    )
    if dist.is_main:
        result.write(paths.record, force=True)  # last: the run is complete from here on
        paths.clear_state()
    stages.done("write")
    return result


def finished(paths: RunDir, config: TrainConfig) -> Result:
    """--resume on a complete run: its record, if it was trained with this configuration."""
    record = load_result(paths.record)
    check_same(paths.record, identity(record.config), identity(asdict(config)))
    paths.done()
    return record
