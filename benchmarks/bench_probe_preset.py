"""`lossxfer probe --preset fast` against the paper's sweep (`--preset paper`, the default).

Runs the linear probe's protocol (docs/method.md §4) on the same rows four ways: the paper's
45-point float64 sweep, the fast preset (12 points over the same λ range, float32 iterations
polished in float64 to the same tolerance), and each change alone (12 points in float64; 45
points mixed), so the time saved and the accuracy moved can be told apart. Prints, per input,
the CPU seconds (process time, one thread: robust to other jobs), chosen λ and test top-1 of
each, then the time ratios and the test top-1 differences against the paper's sweep (mean,
largest loss, largest gain) over all inputs.

Inputs: activation stores (their `penultimate` layer, else the last; the store's val split or
the probe's held-out 20% as `lossxfer probe` does), or without any, synthetic penultimate-like
features as in bench_probe.py.

Usage: .venv/bin/python benchmarks/bench_probe_preset.py [STORE.h5 ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from typing import Any

import torch

from lossxfer.probe.common import Features, ProbeSplits, protocol_splits
from lossxfer.probe.methods import PRESETS, ProbeOptions, linear
from lossxfer.progress import no_progress

WAYS = {
    "paper": PRESETS["paper"],
    "fast": PRESETS["fast"],
    "12 pts f64": replace(PRESETS["paper"], grid=PRESETS["fast"].grid),
    "45 pts mixed": replace(PRESETS["paper"], mixed=True),
}


def store_splits(path: str) -> ProbeSplits:
    from lossxfer.probe.run import load_layer
    from lossxfer.separation import default_layers
    from lossxfer.store import open_store

    with open_store(path) as store:
        layer = default_layers(store, "train")[0]
        splits, _ = load_layer(store, layer, 0.2, 0, torch.device("cpu"), torch.float64)
    return splits


def synthetic_splits(seed: int) -> ProbeSplits:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_probe import features

    rows, labels = features(6000, 128, 20, seed)
    x, y, xt, yt = rows[:4000], labels[:4000], rows[4000:], labels[4000:]

    def f(a: Any, b: Any) -> Features:
        return Features(torch.from_numpy(a).double(), torch.from_numpy(b))

    splits, _ = protocol_splits("synthetic", f(x, y), f(xt, yt), None, 0.2, seed)
    return splits


def run(splits: ProbeSplits, options: ProbeOptions) -> tuple[float, float, float]:
    """CPU seconds of this process (one thread: robust to other jobs on a shared machine)."""
    tick = time.process_time()
    fit = linear(splits, options, no_progress, "linear")
    return time.process_time() - tick, fit.chosen, fit.test_top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="*")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3, help="synthetic inputs (no stores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    inputs = [(p, store_splits(p)) for p in args.stores] or [
        (f"synthetic seed {s}", synthetic_splits(s)) for s in range(args.seeds)
    ]
    results: dict[str, list[tuple[float, float, float]]] = {w: [] for w in WAYS}
    for name, splits in inputs:
        print(f"{name}: fit {len(splits.fit)}, val {len(splits.val)}, test {len(splits.test)}")
        for way, options in WAYS.items():
            seconds, lam, top1 = run(splits, options)
            results[way].append((seconds, lam, top1))
            print(f"  {way:>13}: {seconds:7.2f} CPU s  λ={lam:<9.3g} test top-1 {top1:.4f}")
    paper = results["paper"]
    total = sum(s for s, _, _ in paper)
    head = f"{len(inputs)} inputs; against the paper's 45-point float64 sweep"
    print(f"\n{head} ({total:.1f} CPU s):")
    for way in list(WAYS)[1:]:
        rows = results[way]
        diffs = [100 * (r[2] - p[2]) for r, p in zip(rows, paper, strict=True)]
        same = sum(r[1] == p[1] for r, p in zip(rows, paper, strict=True))
        print(
            f"  {way:>13}: {total / sum(s for s, _, _ in rows):.2f}× faster; test top-1 "
            f"{statistics.mean(diffs):+.2f} points on average (worst {min(diffs):+.2f}, best "
            f"{max(diffs):+.2f}); same λ on {same}/{len(rows)}"
        )


if __name__ == "__main__":
    main()
