"""`report` over ~1,000 result records: the paper's study shape (9 objectives × 8 seeds).

Per run: a train record, linear+kNN probes on 8 transfer datasets, separation, fine-tuning on 2
datasets, and layer-wise CKA (17 layers) against softmax and against seed 0. Times the library
call plus rendering in this process, and the whole CLI in a fresh interpreter (the user's wait).

Usage: .venv/bin/python benchmarks/bench_report.py [--seeds 8]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASETS = ["food101", "cifar10", "cifar100", "birdsnap", "sun397", "cars", "pets", "flowers"]
LAYERS = ["stem", *(f"block{i}" for i in range(1, 17)), "penultimate"]


def write_records(root: Path, seeds: int) -> int:
    from lossxfer.objectives import OBJECTIVES

    rng = random.Random(0)
    count = 0

    def model(objective: str, seed: int) -> dict:
        return {
            "arch": "resnet50",
            "objective": objective,
            "objective_opts": {},
            "seed": seed,
            "data": {"spec": "imagefolder:/data/imagenet", "label": "imagenet"},
            "checkpoint_sha256": f"{objective}-{seed}",
        }

    def emit(name: str, kind: str, mdl: dict, metrics: dict, dataset: str | None = None) -> None:
        nonlocal count
        doc = {
            "format": "lossxfer.result/1",
            "kind": kind,
            "created": "2026-01-01T00:00:00+00:00",
            "lossxfer_version": "0.1.0",
            "inputs": [{"path": "x", "sha256": "0" * 64}],
            "model": mdl,
            "dataset": {"spec": dataset, "label": dataset} if dataset else None,
            "config": {"note": "benchmark"},
            "metrics": metrics,
            "timing": {"wall_s": 1.0},
        }
        path = root / mdl["objective"] / f"s{mdl['seed']}" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2))
        count += 1

    for objective in OBJECTIVES.names():
        for seed in range(seeds):
            m = model(objective, seed)
            emit("train", "train", m, {"test_top1": rng.uniform(0.7, 0.8)})
            for ds in DATASETS:
                acc = {"linear": {"test_top1": rng.random()}, "knn": {"test_top1": rng.random()}}
                emit(f"probe-{ds}", "probe", m, {"layers": {"penultimate": acc}}, ds)
            sep = {
                "r2": rng.random(),
                "sparsity": rng.random(),
                "effective_dim": 100 * rng.random(),
            }
            emit("separation", "separation", m, {"layers": {"penultimate": sep}}, "imagenet")
            for ds in DATASETS[:2]:
                emit(f"finetune-{ds}", "finetune", m, {"test_top1": rng.random()}, ds)
            others = [] if objective == "softmax" else [("softmax", seed)]
            others += [(objective, 0)] if seed else []
            for other in others:
                matrix = [[rng.random() for _ in LAYERS] for _ in LAYERS]
                metrics = {
                    "estimator": "linear",
                    "layers_a": LAYERS,
                    "layers_b": LAYERS,
                    "matrix": matrix,
                    "model_b": model(*other),
                }
                emit(f"cka-{other[0]}-{other[1]}", "cka", m, metrics, "imagenet")
    return count


def _children_cpu() -> float:
    """CPU seconds of finished child processes: the wall time suffers on a loaded machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()

    from lossxfer.report import ReportConfig, render, run_report

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        n = write_records(root, args.seeds)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            text = render(run_report(ReportConfig(paths=(root,))), "markdown")
            best = min(best, time.perf_counter() - start)
        cmd = [sys.executable, "-m", "lossxfer", "report", str(root), "--format", "markdown"]
        cli = cpu = float("inf")
        for _ in range(3):
            start, used = time.perf_counter(), _children_cpu()
            subprocess.run(cmd, check=True, capture_output=True)
            cli = min(cli, time.perf_counter() - start)
            cpu = min(cpu, _children_cpu() - used)
        print(f"records: {n}, rendered: {len(text.splitlines())} lines")
        print(f"library run_report + render (in process, best of 3): {best:.3f} s")
        print(
            f"CLI `lossxfer report DIR --format markdown` (new interpreter, best of 3): "
            f"{cli:.3f} s wall, {cpu:.3f} s CPU"
        )


if __name__ == "__main__":
    main()
