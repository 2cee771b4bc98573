"""Training: the one loop that `train` and `finetune` share, and the `train` verb's library.

`fit` trains a network with SGD (Nesterov momentum), linear warm-up then cosine decay, weight
decay on weights only (not BatchNorm parameters or biases), optional EMA weights for evaluation
(REFERENCE.md §2). It is resumable bit-for-bit on the CPU: the data order of an epoch depends
only on (seed, epoch), and the state file holds weights, momentum buffers, EMA weights, the
global RNG state and the position, saved at every epoch end and when a signal asks to stop.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn

from lossxfer.backend import cpu_threads, resolve_device
from lossxfer.checkpoint import CheckpointMeta, load_tensors, save_checkpoint, save_tensors
from lossxfer.data import Split, load_data
from lossxfer.distributed import Dist, rescale_step
from lossxfer.errors import DivergedError, InputError, Interrupted, Preempted, UsageError
from lossxfer.fsio import check_output, require_file, sha256
from lossxfer.models import build_network
from lossxfer.nets import Network
from lossxfer.objectives import Objective, make_objective
from lossxfer.progress import ProgressFn
from lossxfer.results import Result

LOG = logging.getLogger("lossxfer")
STATE_FORMAT = "lossxfer.train-state/1"
EVAL_BATCH = 512


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation hyperparameters (REFERENCE.md §2's recipe, scaled down by default).

    lr None means the linear scaling rule 0.1 × batch/256. Batch 32 and 10 epochs suit small
    data: smallcnn reaches ≥ 97% on digits with every objective but squared_error (which needs
    --lr ≈ 5e-4); ImageNet-scale runs set the batch (the paper: 4096, 90 epochs). Weight decay
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


@dataclass(frozen=True)
class TrainConfig:
    """Everything `lossxfer train` does; saved in the checkpoint and the result record."""

    data: str
    out: str
    arch: str = "smallcnn"
    loss: str = "softmax"
    loss_opts: dict[str, Any] = field(default_factory=dict)
    classes: tuple[int, ...] | None = None
    label_map: str | None = None  # superclasses to train on (lossxfer.labelmap)
    val_fraction: float = 0.1
    split_seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunOptions = field(default_factory=RunOptions)
    resume: bool = False
    force: bool = False

    def identity(self) -> dict[str, Any]:
        """The fields that determine the trained weights: --resume requires them unchanged."""
        return {
            "data": self.data,
            "arch": self.arch,
            "loss": self.loss,
            "loss_opts": self.loss_opts,
            "classes": list(self.classes) if self.classes is not None else None,
            "label_map": self.label_map,
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed,
            "optim": asdict(self.optim),
            "seed": self.run.seed,
        }


@dataclass
class FitResult:
    network: Network  # the trained weights
    eval_network: Network  # what to evaluate and save: EMA weights when enabled, else `network`
    loss_curve: list[float]  # mean training loss of every epoch
    steps: int
    images: int  # images trained on in this process (for images/s)
    train_s: float  # seconds spent training in this process


EpochHook = Callable[[int, Network, list[float]], None]  # (epochs done, eval network, curve)


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
    on_epoch_end: EpochHook | None = None,
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
    size, all ranks stop after the same step, and only rank 0 writes the state file;
    `on_epoch_end` runs on every rank (hooks write only where `dist.is_main`).
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
    base_lr = optim.base_lr * dist.world_size  # linear scaling rule: lr ∝ global batch
    per_epoch = max(1, n // global_batch)  # drop the last partial batch
    total = optim.steps if optim.steps is not None else optim.epochs * per_epoch
    epochs = math.ceil(total / per_epoch)
    warmup = round(optim.warmup_epochs * per_epoch)

    network.to(device)
    if cuda:
        network.to(memory_format=torch.channels_last)
    if freeze_backbone:
        network.backbone.requires_grad_(False)
    optimizer = torch.optim.SGD(
        _param_groups(network, optim.weight_decay),
        lr=base_lr,
        momentum=optim.momentum,
        nesterov=optim.nesterov,
    )
    ema = _EMA(network, optim.ema) if optim.ema > 0 else None
    pos = _Position(batch=global_batch)
    if resume:
        if state_path is None:
            raise UsageError("--resume needs a state file")
        _load_state(state_path, identity, network, optimizer, ema, pos, device)
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
            _save_state(state_path, identity, network, optimizer, ema, pos, cuda, device)

    started = time.perf_counter()
    images = 0
    sample_shape = tuple(train.dataset[0][0].shape)
    with (
        _deterministic(run.deterministic),
        cpu_threads(device, run.threads, network, sample_shape),
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
                if on_epoch_end is not None:
                    on_epoch_end(epoch + 1, dist.replicate(_eval_copy(network, ema)), pos.curve)
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
    """Weights decay; BatchNorm parameters and biases (ndim ≤ 1) do not (REFERENCE.md §2)."""
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
                + (f"the files of epoch {last_epoch} are kept" if last_epoch else "nothing saved")
                + " (a smaller --lr or a longer --warmup-epochs usually helps)"
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


@dataclass
class _Position:
    """Where training is: global step, per-epoch mean losses, the running sum of this epoch."""

    step: int = 0
    curve: list[float] = field(default_factory=list)
    epoch_sum: float = 0.0
    batch: int = 0  # the global batch that `step` counts (0: unknown, from an older state)

    def add(self, losses: list[float]) -> None:
        self.epoch_sum += math.fsum(losses)

    def finish_epoch(self, steps: int) -> None:
        self.curve.append(self.epoch_sum / steps)
        self.epoch_sum = 0.0


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


def _save_state(
    path: Path,
    identity: dict[str, Any],
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: _EMA | None,
    pos: _Position,
    cuda: bool,
    device: torch.device,
) -> None:
    tensors = {f"model/{k}": v for k, v in network.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema/{k}": v for k, v in ema.shadow.items()})
    for name, param in network.named_parameters():
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            tensors[f"momentum/{name}"] = buffer
    tensors["rng/cpu"] = torch.get_rng_state()
    if cuda:
        tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    tensors["position/step"] = torch.tensor([pos.step], dtype=torch.int64)
    tensors["position/curve"] = torch.tensor(pos.curve, dtype=torch.float64)
    tensors["position/epoch_sum"] = torch.tensor([pos.epoch_sum], dtype=torch.float64)
    tensors["position/batch"] = torch.tensor([pos.batch], dtype=torch.int64)
    meta = {"format": STATE_FORMAT, "identity": json.dumps(identity, sort_keys=True)}
    save_tensors(path, tensors, meta, force=True)


def _load_state(
    path: Path,
    identity: dict[str, Any],
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: _EMA | None,
    pos: _Position,
    device: torch.device,
) -> None:
    tensors, header = load_tensors(require_file(path))
    if header.get("format") != STATE_FORMAT:
        raise InputError(f"{path}: not a lossxfer training state file")
    saved = json.loads(header.get("identity", "{}"))
    now = json.loads(json.dumps(identity, sort_keys=True))
    if saved != now:
        key = next(k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k))
        raise UsageError(
            f"{path}: --resume with a different configuration ({key}: saved "
            f"{saved.get(key)!r}, now {now.get(key)!r})"
        )
    params = dict(network.named_parameters())
    expected = {k: (v.dtype, v.shape) for k, v in network.state_dict().items()}
    expected.update({f"momentum/{k}": (p.dtype, p.shape) for k, p in params.items()})
    for key, value in tensors.items():
        name = key.removeprefix("model/")
        want = expected.get(name if key.startswith("model/") else key)
        if want is not None and (value.dtype, value.shape) != want:
            raise InputError(
                f"{path}: training state tensor {key!r} is {value.dtype} {tuple(value.shape)}, "
                f"the model needs {want[0]} {tuple(want[1])}"
            )
    try:
        network.load_state_dict(_prefixed(tensors, "model/"), strict=True)
        if ema is not None:
            ema.shadow = {k: v.to(device) for k, v in _prefixed(tensors, "ema/").items()}
        for name, param in network.named_parameters():
            buffer = tensors.get(f"momentum/{name}")
            if buffer is not None:
                optimizer.state[param]["momentum_buffer"] = buffer.to(device)
        torch.set_rng_state(tensors["rng/cpu"])
        if "rng/cuda" in tensors and device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng/cuda"], device)
        pos.step = int(tensors["position/step"][0])
        pos.curve = tensors["position/curve"].tolist()
        pos.epoch_sum = float(tensors["position/epoch_sum"][0])
        pos.batch = int(tensors["position/batch"][0]) if "position/batch" in tensors else 0
    except (KeyError, RuntimeError) as exc:
        raise InputError(f"{path}: training state does not fit this model ({exc})") from None


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# The `train` verb.


def run_paths(out: str | Path) -> tuple[Path, Path, Path]:
    """The run directory's files: model.safetensors, state.safetensors, train.json."""
    folder = Path(out)
    return folder / "model.safetensors", folder / "state.safetensors", folder / "train.json"


def check_run_dir(out: str | Path, resume: bool, force: bool) -> None:
    """Before any work: refuse to clobber a finished or interrupted run unless told how."""
    model, state, record = run_paths(out)
    guard_run_dir(out, (model, record), state, resume, force)


def guard_run_dir(
    out: str | Path, outputs: tuple[Path, ...], state: Path, resume: bool, force: bool
) -> None:
    """The run-directory rule of train and finetune: `state` (a file or folder) is what
    --resume continues from; the outputs and the state are never overwritten without --force."""
    if Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"{out}: exists and is not a directory")
    if resume:
        if not state.exists():
            raise InputError(f"{state}: no saved state to resume from")
        return
    for output in outputs:
        check_output(output, force)
    if state.exists() and not force:
        raise UsageError(f"{state}: exists (use --resume to continue, --force to start over)")


def train(
    config: TrainConfig, progress: ProgressFn | None = None, dist: Dist | None = None
) -> Result:
    """Train a network from scratch (or --resume) and write the run directory's three files.

    Under torchrun (`dist`) every rank trains and evaluates its shard; rank 0 alone writes.
    """
    dist = dist or Dist()
    config.optim.check()
    check_run_dir(config.out, config.resume, config.force)
    model_path, state_path, record_path = run_paths(config.out)
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
    # run has written its checkpoint (and an empty test split would score 0% silently).
    evaluation = {
        n: data.split(n) for n in (("val", "test") if config.val_fraction > 0 else ("test",))
    }
    for name, split in evaluation.items():
        if len(split) == 0:
            raise UsageError(f"--data {config.data}: the {name} split is empty")
    objective = make_objective(config.loss, config.loss_opts)
    device = resolve_device(config.run.device)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.run.seed)
        network = build_network(config.arch, data.input, objective, data.num_classes)

        def meta(metrics: dict[str, Any]) -> CheckpointMeta:
            return CheckpointMeta(
                arch=config.arch,
                objective=config.loss,
                objective_opts=objective.options(),
                num_classes=data.num_classes,
                classes=data.classes,
                input=data.input,
                data=data.describe(),
                seed=config.run.seed,
                config=asdict(config),
                metrics=metrics,
            )

        def save_epoch(epochs: int, net: Network, curve: list[float]) -> None:
            if dist.is_main:
                meta_now = meta({"epochs": epochs, "loss_curve": curve})
                save_checkpoint(model_path, net, meta_now, True)

        done = fit(
            network,
            objective,
            data.split("train", augment=True),
            config.optim,
            config.run,
            device=device,
            identity=config.identity(),
            state_path=state_path,
            resume=config.resume,
            on_epoch_end=save_epoch,
            progress=progress,
            dist=dist,
        )
    metrics: dict[str, Any] = {}
    for name, split in evaluation.items():
        scores = evaluate(done.eval_network, objective, split, device, config.run.workers, dist)
        metrics.update({f"{name}_top1": scores["top1"], f"{name}_top5": scores["top5"]})
    metrics.update(loss_curve=done.loss_curve, epochs=len(done.loss_curve), steps=done.steps)
    if dist.is_main:
        save_checkpoint(model_path, done.eval_network, meta(metrics), force=True)
    result = Result(
        kind="train",
        metrics=metrics,
        config=asdict(config),
        model=meta(metrics).provenance(sha256(model_path) if dist.is_main else ""),
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
        result.write(record_path, force=True)
    return result
