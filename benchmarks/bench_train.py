"""Per-step time of lossxfer's training loop against a minimal hand-written PyTorch loop.

Same model (smallcnn + softmax head), same data (digits, in memory), same batch size, same
optimiser (SGD Nesterov, decay groups), in one process; the two alternate `--repeats` times so
that background load hits both alike, and the best time of each is compared. Times are
CPU seconds of this process (threads summed): on a shared machine wall time is mostly noise.
Target: ≤ 1.05.

    .venv/bin/python benchmarks/bench_train.py [--batch-size 32] [--epochs 5] [--repeats 9]
        [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lossxfer.data import load_data
from lossxfer.loop import OptimConfig, RunOptions, _param_groups, fit
from lossxfer.models import build_network
from lossxfer.nets import Network
from lossxfer.objectives import make_objective


def fresh(data_input: object, seed: int = 0) -> Network:
    torch.manual_seed(seed)
    return build_network("smallcnn", data_input, make_objective("softmax"), 10)  # type: ignore[arg-type]


def hand_loop(
    network: Network,
    images: torch.Tensor,
    labels: torch.Tensor,
    optim: OptimConfig,
    device: torch.device,
) -> int:
    """What one would write by hand: shuffle, slice, forward, CE, backward, step."""
    network.to(device).train()
    images, labels = images.to(device), labels.to(device)
    opt = torch.optim.SGD(
        _param_groups(network, optim.weight_decay),
        lr=optim.base_lr,
        momentum=optim.momentum,
        nesterov=True,
    )
    per_epoch = len(labels) // optim.batch_size
    for _ in range(optim.epochs):
        perm = torch.randperm(len(labels), device=device)
        for i in range(per_epoch):
            idx = perm[i * optim.batch_size : (i + 1) * optim.batch_size]
            loss = torch.nn.functional.cross_entropy(network(images[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return per_epoch * optim.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)  # train's default
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load_data("digits")
    split = data.split("train", augment=True)
    tensors = split.dataset.tensors()  # type: ignore[attr-defined]
    assert tensors is not None
    optim = OptimConfig(epochs=args.epochs, batch_size=args.batch_size, warmup_epochs=0)
    run = RunOptions(device=args.device, threads=torch.get_num_threads())  # same as the hand loop
    objective = make_objective("softmax")
    ours, theirs = [], []
    load = "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    for r in range(args.repeats):
        for side in ("ours", "hand") if r % 2 == 0 else ("hand", "ours"):  # A B B A …
            start = time.process_time()
            if side == "ours":
                done = fit(fresh(data.input), objective, split, optim, run, device=device,
                           identity={})  # fmt: skip
                if device.type == "cuda":
                    torch.cuda.synchronize()
                ours.append((time.process_time() - start) / done.steps)
            else:
                steps = hand_loop(fresh(data.input), *tensors, optim, device)
                theirs.append((time.process_time() - start) / steps)
    best_ours, best_theirs = min(ours), min(theirs)
    print(
        f"device {device}, {torch.get_num_threads()} CPU thread(s), batch {args.batch_size}, "
        f"{done.steps} steps per run, {args.repeats} runs each, A B B A …; {load} before, "
        "load {:.2f} {:.2f} {:.2f} after".format(*os.getloadavg())
    )
    print(
        f"lossxfer fit : {1000 * best_ours:8.2f} CPU ms/step (runs: "
        + ", ".join(f"{1000 * t:.1f}" for t in ours)
        + ")"
    )
    print(
        f"hand loop    : {1000 * best_theirs:8.2f} CPU ms/step (runs: "
        + ", ".join(f"{1000 * t:.1f}" for t in theirs)
        + ")"
    )
    print(f"ratio (lossxfer / hand, best of each): {best_ours / best_theirs:.3f}  (target ≤ 1.05)")
    median = statistics.median(ours) / statistics.median(theirs)
    print(f"ratio of medians: {median:.3f}")


if __name__ == "__main__":
    main()
