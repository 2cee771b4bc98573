"""The runs of examples/fashion-study.sh, in one Python process (the library API).

Each run is what these commands do (same configurations, same files, so the CLI reruns any
step identically):

    lossxfer train --data DATA --arch ARCH --loss LOSS --seed S --epochs E [--label-map MAP |
        --classes 0-4] -o RUN
    lossxfer extract RUN/model.safetensors --data DATA [--label-map MAP | --classes 0-4]
        --split test --layers penultimate -o RUN/source.h5
    lossxfer separation RUN/source.h5 --layer penultimate -o RUN/separation.json
    lossxfer extract RUN/model.safetensors --data DATA [--classes 5-9] --split train
        --split test --layers penultimate -o RUN/transfer.h5
    lossxfer probe RUN/transfer.h5 --layer penultimate --method linear --method knn
        -o RUN/probe.json

One process instead of five per run saves the interpreter and torch start-up (about 10 CPU
seconds a run), which on a small shared CPU is as much as a small run's training. Settings come
from the environment, as fashion-study.sh sets them; an output that exists is skipped.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import torch

from lossxfer.extract import ExtractConfig, run_extract
from lossxfer.probe.run import ProbeConfig, run_probe
from lossxfer.separation import SeparationConfig, run_separation
from lossxfer.train import OptimConfig, RunOptions, TrainConfig, train

ENV = os.environ
OUT = Path(ENV["OUT"])
DATA = ENV["DATA"]
MAP = ENV["MAP"]
ARCH = ENV.get("ARCH", "smallcnn")
DEVICE = ENV.get("DEVICE", "cpu")
THREADS = int(ENV.get("THREADS", "1"))
EPOCHS = int(ENV.get("EPOCHS", "10"))


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} {message}", file=sys.stderr, flush=True)


def one(proto: str, name: str, seed: int, epochs: int, loss: str, opts: dict[str, str]) -> None:
    """Train, extract, separation and probe for one run; skip what exists."""
    run = OUT / "runs" / proto / f"{name}-s{seed}"
    if proto == "converge":
        run = OUT / "converge" / f"{name}-e{epochs}-s{seed}"
    coarse = proto != "split"
    source_classes = None if coarse else (0, 1, 2, 3, 4)
    label_map = MAP if coarse else None
    model = run / "model.safetensors"
    if not model.exists():
        log(f"train {run}")
        train(
            TrainConfig(
                data=DATA,
                arch=ARCH,
                loss=loss,
                loss_opts=dict(opts),
                classes=source_classes,
                label_map=label_map,
                optim=OptimConfig(epochs=epochs),  # each objective's default rate
                run=RunOptions(device=DEVICE, seed=seed, threads=THREADS),
            ),
            run,
            resume=True,  # a run stopped part-way continues from its saved state
        )
    if proto == "converge":
        return
    common = {"checkpoint": str(model), "data": DATA, "layers": ("penultimate",)}
    common.update(device=DEVICE, threads=THREADS)
    steps = [
        ("source.h5", lambda out: run_extract(
            ExtractConfig(**common, out=out, splits=("test",), classes=source_classes,
                          label_map=label_map))),
        ("separation.json", lambda out: run_separation(
            SeparationConfig(str(run / "source.h5"), ("penultimate",))).write(out)),
        ("transfer.h5", lambda out: run_extract(
            ExtractConfig(**common, out=out, splits=("train", "test"),
                          classes=None if coarse else (5, 6, 7, 8, 9)))),
        ("probe.json", lambda out: run_probe(
            ProbeConfig(str(run / "transfer.h5"), ("penultimate",), ("linear", "knn"),
                        device=DEVICE)).write(out)),
    ]  # fmt: skip
    for file, step in steps:
        if not (run / file).exists():
            log(f"{file.split('.')[0]} {run}")
            step(str(run / file))


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(THREADS)
    seeds = [int(s) for s in ENV.get("SEED_LIST", "0 1 2").split()]
    objectives = ENV["OBJECTIVES"].split()
    for seed in seeds:
        for proto in ENV.get("PROTOCOLS", "c2f split").split():
            for loss in objectives:
                one(proto, loss, seed, EPOCHS, loss, {})
        if seed == 0:
            for epochs in ENV.get("LADDER", "").split():
                one("converge", "softmax", 0, int(epochs), "softmax", {})
        if str(seed) in ENV.get("SWEEP_SEEDS", "0").split():
            for alpha in ENV.get("ALPHAS", "").split():
                name = f"label_smoothing-alpha{alpha}"
                one("sweep", name, seed, EPOCHS, "label_smoothing", {"alpha": alpha})
            for tau in ENV.get("TAUS", "").split():
                name = f"logit_normalization-tau{tau}"
                one("sweep", name, seed, EPOCHS, "logit_normalization", {"tau": tau})


if __name__ == "__main__":
    main()
