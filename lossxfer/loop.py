"""The one training loop that `train` and `finetune` share (docs/method.md §2).

`fit` trains a network with SGD (Nesterov momentum), linear warm-up then cosine decay, weight
decay on weights only (not BatchNorm parameters or biases), optional EMA weights for evaluation.
It is resumable bit-for-bit on the CPU: the data order of an epoch depends only on (seed,
epoch), and the training state (lossxfer/trainstate.py) holds weights, momentum buffers, EMA
weights, the global RNG state and the position, saved at every epoch end and when a signal asks
to stop.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn

from lossxfer.backend import cpu_threads, sgd
from lossxfer.data import Split
from lossxfer.distributed import Dist, rescale_step
from lossxfer.errors import DivergedError, Interrupted, Preempted, UsageError
from lossxfer.nets import Network
from lossxfer.objectives import Objective
from lossxfer.progress import ProgressFn
from lossxfer.trainstate import Position, load_state, save_state

LOG = logging.getLogger("lossxfer")
EVAL_BATCH = 512


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation hyperparameters (docs/method.md §2's recipe, scaled down by default).

    lr None means the linear scaling rule 0.1 × batch/256 times the objective's `lr_scale`
    (squared_error's loss is far larger than cross-entropy's: 0.016, docs/method.md §1). Batch
    32 and 10 epochs suit small data: smallcnn reaches ≥ 97% on digits with every objective at
    these defaults; ImageNet-scale runs set the batch (the paper: 4096, 90 epochs). Weight decay
    defaults to the paper's 8e-5 and never applies to BatchNorm parameters or biases (any
    parameter with ndim ≤ 1).
    `steps`, when given, replaces `epochs` as the schedule length. `ema` is the decay of the
    exponential moving average of the weights used for evaluation (0 = off).
    """

    epochs: int = 10
    steps: int | None = None
    batch_size: int = 32
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 8e-5
    warmup_epochs: float = 1.0
    ema: float = 0.0

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else 0.1 * self.batch_size / 256

    def check(self) -> None:
        """Reject values that cannot train, before any work starts (exit 2)."""
        if self.epochs < 1 or (self.steps is not None and self.steps < 1):
            raise UsageError("--epochs/--steps must be at least 1")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size}: must be at least 1")
        if not self.base_lr > 0 or not math.isfinite(self.base_lr):
            raise UsageError(f"--lr {self.base_lr}: must be a positive number")
        if not 0 <= self.momentum < 1:
            raise UsageError(f"--momentum {self.momentum}: expected a value in [0, 1)")
        if self.nesterov and self.momentum == 0:
            raise UsageError("--nesterov needs --momentum > 0 (use --no-nesterov)")
        if not self.weight_decay >= 0:
            raise UsageError(f"--weight-decay {self.weight_decay}: must be ≥ 0")
        if not self.warmup_epochs >= 0:
            raise UsageError(f"--warmup-epochs {self.warmup_epochs}: must be ≥ 0")
        if not 0 <= self.ema < 1:
            raise UsageError(f"--ema {self.ema}: expected a decay in [0, 1) (0 = off)")


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what to learn): device, seed, determinism, compilation, data workers."""

    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    compile: bool = False
    workers: int = 0
    threads: int | None = None  # CPU intra-op threads; None: auto (backend.cpu_threads)


@dataclass
class FitResult:
    network: Network  # the trained weights
    eval_network: Network  # what to evaluate and save: EMA weights when enabled, else `network`
    loss_curve: list[float]  # mean training loss of every epoch
    steps: int
    images: int  # images trained on in this process (for images/s)
    train_s: float  # seconds spent training in this process
    training: dict[str, Any]  # the resolved optimisation: what makes two runs comparable
    runtime: dict[str, Any]  # where it ran: world size, CPU threads, device, torch version


# ---------------------------------------------------------------------------------------------
# The loop.


def fit(
    network: Network,
    objective: Objective,
    train: Split,
    optim: OptimConfig,
    run: RunOptions,
    *,
    device: torch.device,
    identity: dict[str, Any],
    state_path: Path | None = None,
    resume: bool = False,
    freeze_backbone: bool = False,
    progress: ProgressFn | None = None,
    label: str = "train",
    dist: Dist | None = None,
) -> FitResult:
    """Train `network` on `train`; the one loop behind `train` and `finetune`.

    State is saved to `state_path` at each epoch end and when SIGTERM/SIGUSR1 (→ Preempted,
    143) or SIGINT (→ Interrupted, 130) arrives, after the current step. A non-finite loss
    raises DivergedError naming the epoch and step; nothing from the diverged epoch is saved.
    With `freeze_backbone` only the head trains and the backbone stays in eval mode.

    Under torchrun (`dist`, see lossxfer/distributed.py) `optim.batch_size` is per process, a
    step is one global batch of batch × world rows, the learning rate is scaled by the world
    size, all ranks stop after the same step, and only rank 0 writes the state file.
    """
    dist = dist or Dist()
    cuda = device.type == "cuda"
    feeder = _Feeder(train, device, run.workers)
    n = len(train)
    if n == 0:
        raise UsageError(f"{label}: the training split is empty")
    if n < dist.world_size:
        raise UsageError(f"{label}: {n} training rows cannot feed {dist.world_size} processes")
    global_batch = optim.batch_size * dist.world_size
    # --lr as given, else the objective's scale of the default rate (docs/method.md §1); then
    # the linear scaling rule: lr ∝ global batch
    scale = objective.lr_scale if optim.lr is None else 1.0
    base_lr = optim.base_lr * scale * dist.world_size
    per_epoch = max(1, n // global_batch)  # drop the last partial batch
    total = optim.steps if optim.steps is not None else optim.epochs * per_epoch
    epochs = math.ceil(total / per_epoch)
    warmup = round(optim.warmup_epochs * per_epoch)

    network.to(device)
    if cuda:
        network.to(memory_format=torch.channels_last)
    if freeze_backbone:
        network.backbone.requires_grad_(False)
    optimizer = sgd(  # torch's SGD, without importing torch._dynamo (seconds of start-up)
        _param_groups(network, optim.weight_decay),
        lr=base_lr,
        momentum=optim.momentum,
        nesterov=optim.nesterov,
    )
    ema = _EMA(network, optim.ema) if optim.ema > 0 else None
    pos = Position(batch=global_batch)
    if resume:
        if state_path is None:
            raise UsageError("--resume needs a state file")
        shadow = ema.shadow if ema is not None else None
        load_state(state_path, identity, network, optimizer, shadow, pos, device)
        pos.step = rescale_step(pos.step, pos.batch, global_batch, n)  # another world size
        pos.batch = global_batch
    dist.seed_rank(run.seed, pos.step)
    wrapped = dist.wrap(network)  # DistributedDataParallel under torchrun
    model: Callable[[torch.Tensor], torch.Tensor] = (
        torch.compile(wrapped) if run.compile else wrapped
    )
    last_epoch = pos.step // per_epoch
    flush_every = 32 if cuda else 1  # a host sync per step is free on the CPU, not on a GPU

    def save(step: int) -> None:
        pos.step = step
        if state_path is not None and dist.is_main:
            shadow = ema.shadow if ema is not None else None
            save_state(state_path, identity, network, optimizer, shadow, pos, device)

    started = time.perf_counter()
    images = 0
    sample_shape = tuple(train.dataset[0][0].shape)
    with (
        _deterministic(run.deterministic),
        cpu_threads(device, run.threads, network, sample_shape) as threads,
        _StopSignals() as stop,
    ):
        network.train()
        if freeze_backbone:
            network.backbone.eval()
        batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(())
        pending: list[torch.Tensor] = []  # losses not yet checked (one host sync per flush)
        for step in range(pos.step, total):
            epoch, i = divmod(step, per_epoch)
            if i == 0 or step == pos.step:
                order = _epoch_order(n, run.seed, epoch)[i * global_batch :]
                steps_left = min(total - epoch * per_epoch, per_epoch) - i
                mine = dist.shard(order[: steps_left * global_batch])  # rows r, r+W, … of each
                batches = feeder.batches(mine, optim.batch_size)
            lr = _lr_at(step, total, warmup, base_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = next(batches)
            with torch.autocast(device.type, torch.bfloat16, enabled=cuda):
                logits = model(x)
            loss = objective.loss(logits.float(), y, network.head)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(network, step)
            images += len(y)
            pending.append(loss.detach())
            if progress is not None:
                progress(label, i + 1, per_epoch)
            signum = dist.agree_stop(stop.signum)  # every rank stops after the same step
            epoch_done = i == per_epoch - 1 or step == total - 1
            if epoch_done or signum is not None or len(pending) >= flush_every:
                losses = dist.mean_losses(pending)
                pos.add(_check_finite(losses, step, epoch, per_epoch, last_epoch))
                pending = []
            if epoch_done:
                pos.finish_epoch(i + 1)
                save(step + 1)
                last_epoch = epoch + 1
                LOG.info(
                    "%s epoch %d/%d: loss %.4f, lr %.4g, %.0f images/s",
                    label,
                    epoch + 1,
                    epochs,
                    pos.curve[-1],
                    lr,
                    images / max(time.perf_counter() - started, 1e-9),
                )
            if signum is not None:
                if not epoch_done:
                    save(step + 1)
                dist.barrier()  # rank 0 has written the state
                where = f"epoch {epoch + 1} step {i + 1}/{per_epoch}"
                saved = (
                    f"; state saved to {state_path}, continue with --resume" if state_path else ""
                )
                if signum == signal.SIGINT:
                    raise Interrupted(f"interrupted at {where}{saved}")
                name = signal.Signals(signum).name
                raise Preempted(f"{name} at {where}{saved}")
    return FitResult(
        network=network,
        eval_network=dist.replicate(_eval_copy(network, ema)),
        loss_curve=list(pos.curve),
        steps=total,
        images=images,
        train_s=time.perf_counter() - started,
        training={  # the `training` block of checkpoint provenance (docs/formats.md)
            "optimizer": "sgd",
            "schedule": "warmup_cosine",
            "epochs": epochs,
            "steps": total,
            "batch_size": global_batch,
            "lr": base_lr,
            "momentum": optim.momentum,
            "nesterov": optim.nesterov,
            "weight_decay": optim.weight_decay,
            "warmup_epochs": optim.warmup_epochs,
            "ema": optim.ema,
            "freeze_backbone": freeze_backbone,
        },
        runtime={
            "world_size": dist.world_size,
            "threads": threads,
            "device": str(device),
            "torch_version": torch.__version__,
        },
    )


@torch.no_grad()
def evaluate(
    network: Network,
    objective: Objective,
    split: Split,
    device: torch.device,
    workers: int = 0,
    dist: Dist | None = None,
) -> dict[str, float]:
    """Top-1 and top-min(5, K) accuracy (fractions) of `network` in eval mode on `split`.

    Under torchrun each rank scores rows r, r+W, …: every row counts exactly once.
    """
    dist = dist or Dist()
    network.eval()
    top1 = topk = 0
    feeder = _Feeder(split, device, workers)
    for x, y in feeder.batches(dist.eval_rows(len(split)), EVAL_BATCH):
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            logits = network(x)
        scores = objective.predict_logits(logits.float())
        best = scores.topk(min(5, scores.shape[1]), dim=1).indices
        hits = best == y[:, None]
        top1 += int(hits[:, 0].sum())
        topk += int(hits.any(dim=1).sum())
    counts = dist.sum(torch.tensor([top1, topk, len(dist.eval_rows(len(split)))]))
    top1, topk, n = (int(c) for c in counts)
    return {"top1": top1 / max(n, 1), "top5": topk / max(n, 1)}


def _param_groups(network: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weights decay; BatchNorm parameters and biases (ndim ≤ 1) do not (docs/method.md §2)."""
    params = [p for p in network.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up from base/warmup to base, then cosine decay to 0 at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * base * (1.0 + math.cos(math.pi * progress))


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled row order of an epoch, a function of (seed, epoch) only: resume recomputes
    it instead of storing it (and a distributed sampler would shard the same order)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def _check_finite(
    losses: list[torch.Tensor], step: int, epoch: int, per_epoch: int, last_epoch: int
) -> list[float]:
    """Losses of the last len(losses) steps (ending at `step`) as floats; non-finite → exit 5."""
    values = torch.stack(losses).double().cpu().tolist()
    for offset, value in enumerate(values):
        if not math.isfinite(value):
            bad = step - len(values) + 1 + offset
            bad_epoch, bad_i = divmod(bad, per_epoch)
            raise DivergedError(
                f"training diverged: loss is {value} at epoch {bad_epoch + 1} step "
                f"{bad_i + 1}/{per_epoch}; "
                + (f"the state of epoch {last_epoch} is kept" if last_epoch else "nothing saved")
                + " (a smaller --lr or a longer --warmup-epochs usually helps; --force starts"
                " over)"
            )
    return values


# ---------------------------------------------------------------------------------------------
# Pieces of the loop.


class _Feeder:
    """Batches of a split on the device: indexed from in-memory tensors when the dataset has
    them (much faster than a DataLoader for small images), else through a DataLoader."""

    def __init__(self, split: Split, device: torch.device, workers: int) -> None:
        self.split = split
        self.device = device
        self.workers = workers
        tensors = getattr(split.dataset, "tensors", lambda: None)()
        self.tensors = None if tensors is None else (tensors[0].to(device), tensors[1].to(device))
        self.channels_last = device.type == "cuda"

    def batches(
        self, order: torch.Tensor, batch_size: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive batches of the rows in `order` (the last one may be short)."""
        size = batch_size or len(order)
        chunks = [order[s : s + size] for s in range(0, len(order), size)]
        if self.tensors is not None:
            images, labels = self.tensors
            for idx in chunks:
                idx = idx.to(self.device)
                yield self._place(images[idx]), labels[idx]
            return
        from torch.utils.data import DataLoader

        loader: DataLoader[tuple[torch.Tensor, torch.Tensor]] = DataLoader(
            self.split.dataset,  # type: ignore[arg-type]
            batch_sampler=[c.tolist() for c in chunks],
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )
        for x, y in loader:
            yield self._place(x.to(self.device, non_blocking=True)), y.to(self.device)

    def _place(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class _EMA:
    """Exponential moving average of all weights and buffers, TF-style warm-up of the decay:
    min(decay, (1 + t)/(10 + t)) at update t, so short runs are not dominated by the init."""

    def __init__(self, network: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in network.state_dict().items()}

    def update(self, network: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        floats, targets = [], []
        for key, value in network.state_dict().items():
            if value.is_floating_point():
                floats.append(self.shadow[key])
                targets.append(value.detach())
            else:
                self.shadow[key].copy_(value)
        torch._foreach_lerp_(floats, targets, 1.0 - decay)


def _eval_copy(network: Network, ema: _EMA | None) -> Network:
    if ema is None:
        return network
    copied = copy.deepcopy(network)
    copied.load_state_dict(ema.shadow)
    return copied


class _StopSignals:
    """Within training only: SIGTERM/SIGUSR1/SIGINT set a flag checked between steps.

    A second Ctrl-C stops at once — if it comes at least a second after the first: under
    torchrun every rank gets the terminal's SIGINT and, moments later, torchrun's forwarded
    copy, which must not cut the state save short. Off the main thread (where handlers cannot
    be installed) signals keep their usual effect.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
    REPEAT_S = 1.0  # a second SIGINT sooner than this is the same Ctrl-C

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._first_sigint = 0.0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            if now - self._first_sigint >= self.REPEAT_S:
                raise KeyboardInterrupt
            return
        if signum == signal.SIGINT:
            self._first_sigint = now
        self.signum = signum

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels (and no cuDNN autotuning) for the duration of training."""
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]
