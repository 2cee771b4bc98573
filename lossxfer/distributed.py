"""Data-parallel training under `torchrun`: the launch context and the few collectives the loop
needs (docs/cli.md, `train`).

Two objects. `DistContext` is what the launcher said (rank, world size, local rank); the CLI
builds it with `DistContext.from_env(os.environ)` — the library itself reads no environment.
`Dist` is the running process group, made by `session(context, device)`; every method is a
no-op in a single process (`Dist()`), so the training loop has one code path.

Semantics (what a user of `train`/`finetune` under torchrun gets):

- Backend: nccl when the device is CUDA (each process takes `cuda:LOCAL_RANK`), gloo on the CPU.
  Small control values (stop flag, losses, accuracy counts) go through a gloo group on the CPU
  so that they never wait on a CUDA stream.
- `--batch-size` is per process; the global batch is batch × world size. An epoch is
  ⌊rows / global batch⌋ global steps. The learning rate (`--lr`, or its default 0.1 × batch/256)
  is the rate for one process's batch and is multiplied by the world size: the linear scaling
  rule, so 0.1 × global batch/256 by default.
- Data order: an epoch's permutation is a function of (seed, epoch) only; global step j takes
  rows [j·G, (j+1)·G) of it and rank r takes every world-th of them starting at r, i.e.
  `DistributedSampler` semantics (drop_last) on the same permutation for in-memory and
  DataLoader data alike. So one process with batch G and W processes with batch G/W see the same
  global batches.
- Evaluation: rank r takes rows r, r+W, r+2W, …; no row is padded or duplicated; the hit
  counts and the row count are summed over ranks and divided once.
- Stopping: SIGTERM/SIGUSR1/SIGINT reach each rank at slightly different moments (torchrun
  forwards them, SLURM may signal every process); after every step the ranks take the maximum
  of their pending signal numbers, so all stop after the same step. Rank 0 saves the state,
  every rank waits for that (barrier) and raises the same error (exit 143, or 130 for Ctrl-C).
- Resume on any world size: the state holds the replicated model, optimizer and EMA once (rank
  0's), the step counter and the global batch it counts. A state saved with another global
  batch is mapped to the same epoch and the first global batch that starts at or before the
  first unseen row (`rescale_step`); the LR schedule follows the new step count. With the same
  world size resuming is exact up to floating-point reduction order; across world sizes the
  epoch that straddles the change is approximate (a few rows may be seen twice and its mean
  loss mixes the two batch sizes).
- Files: only rank 0 writes; the other ranks never create, replace or remove an output.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from lossxfer.errors import DeviceError, UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

LOG = logging.getLogger("lossxfer")
M = TypeVar("M", bound="nn.Module")

# The variables torchrun (and torch.distributed.launch) set in every worker.
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a launch: rank r of `world_size`, `local_rank` on its node.

    The default is a single process (rank 0 of 1).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DistContext:
        """Parse torchrun's RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE (CLI only).

        None of them set → a single process. RANK without WORLD_SIZE (or the reverse), a value
        that is not an integer, or a rank outside the world → UsageError (exit 2).
        """
        if "RANK" not in env and "WORLD_SIZE" not in env:
            return cls()
        values: dict[str, int] = {}
        for key in ENV_KEYS:
            raw = env.get(key)
            if raw is None:
                if key in ("RANK", "WORLD_SIZE"):
                    other = "WORLD_SIZE" if key == "RANK" else "RANK"
                    raise UsageError(f"{other} is set but {key} is not: launch with torchrun")
                continue
            try:
                values[key] = int(raw)
            except ValueError:
                raise UsageError(f"{key}={raw!r}: expected an integer (set by torchrun)") from None
        rank, world = values["RANK"], values["WORLD_SIZE"]
        if world < 1 or not 0 <= rank < world:
            raise UsageError(f"RANK={rank}, WORLD_SIZE={world}: expected 0 ≤ RANK < WORLD_SIZE")
        local_rank = values.get("LOCAL_RANK", 0)
        local_world = values.get("LOCAL_WORLD_SIZE", world)
        if not 0 <= local_rank < max(local_world, 1):
            raise UsageError(f"LOCAL_RANK={local_rank}: outside LOCAL_WORLD_SIZE={local_world}")
        return cls(rank, world, local_rank, local_world)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    def check_device(self, device: str) -> None:
        """Under torchrun each process takes cuda:LOCAL_RANK itself: an explicit index is an
        error (all ranks would share one GPU)."""
        if self.distributed and device.startswith("cuda:"):
            raise UsageError(
                f"--device {device}: under torchrun use --device auto or cuda "
                "(each process takes cuda:LOCAL_RANK)"
            )


class Dist:
    """The running process group as the training loop sees it; `Dist()` is one process."""

    def __init__(
        self,
        context: DistContext | None = None,
        device: torch.device | None = None,
        backend: str | None = None,
        cpu_group: Any = None,
    ) -> None:
        self.context = context or DistContext()
        self.device = device
        self.backend = backend
        self._cpu_group = cpu_group  # gloo group for small host-side values (None: default)

    # -- who am I ---------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.context.rank

    @property
    def world_size(self) -> int:
        return self.context.world_size

    @property
    def is_main(self) -> bool:
        return self.context.is_main

    @property
    def distributed(self) -> bool:
        return self.context.distributed

    # -- data -------------------------------------------------------------------------------
    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a run of whole global batches: every world-th, from `rank`."""
        return order[self.rank :: self.world_size] if self.distributed else order

    def eval_rows(self, n: int) -> torch.Tensor:
        """This rank's evaluation rows: r, r+W, r+2W, … < n — each row on exactly one rank."""
        import torch

        return torch.arange(min(self.rank, n), n, self.world_size)

    # -- collectives (no-ops in one process) ------------------------------------------------
    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks of a small tensor (copied to the CPU, returned there)."""
        out = values.detach().cpu().clone()
        if self.distributed:
            import torch.distributed as td

            td.all_reduce(out, td.ReduceOp.SUM, group=self._cpu_group)
        return out

    def mean_losses(self, losses: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-step losses averaged over ranks (float64, on the CPU): every rank sees the same
        values, so a non-finite loss on any rank stops all of them at the same step."""
        if not self.distributed or not losses:
            return losses
        import torch

        total = self.sum(torch.stack([x.detach().double() for x in losses]))
        return list((total / self.world_size).unbind())

    def agree_stop(self, signum: int | None) -> int | None:
        """The largest pending signal number over all ranks (None: nobody was signalled).

        Called after every step by every rank: all ranks stop after the same step.
        """
        if not self.distributed:
            return signum
        import torch
        import torch.distributed as td

        flag = torch.tensor([signum or 0], dtype=torch.int64)
        td.all_reduce(flag, td.ReduceOp.MAX, group=self._cpu_group)
        return int(flag[0]) or None

    def from_main(self, value: int) -> int:
        """Rank 0's value on every rank (e.g. a decision that depends on files rank 0 wrote)."""
        if not self.distributed:
            return value
        import torch
        import torch.distributed as td

        box = torch.tensor([value], dtype=torch.int64)
        td.broadcast(box, src=0, group=self._cpu_group)
        return int(box[0])

    def replicate(self, module: M) -> M:
        """Overwrite every parameter and buffer with rank 0's (BatchNorm statistics drift
        apart between ranks; what is evaluated must be what rank 0 saves). Returns `module`."""
        if self.distributed:
            import torch.distributed as td

            for tensor in module.state_dict().values():
                td.broadcast(tensor, src=0)
        return module

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as td

            td.barrier(group=self._cpu_group)

    def wrap(self, network: nn.Module) -> nn.Module:
        """`DistributedDataParallel(network)` when distributed (gradients averaged over ranks,
        buffers broadcast from rank 0 at each forward), else `network` itself."""
        if not self.distributed:
            return network
        from torch.nn.parallel import DistributedDataParallel

        cuda = self.device is not None and self.device.type == "cuda"
        return DistributedDataParallel(network, device_ids=[self.device] if cuda else None)

    def seed_rank(self, seed: int, step: int) -> None:
        """Give ranks other than 0 their own random stream (dropout, augmentation), a function
        of (seed, rank, step); rank 0 keeps the stream saved in the state file."""
        if self.distributed and self.rank > 0:
            import torch

            torch.manual_seed((seed * 1_000_003 + step) * 1_009 + self.rank)


def rescale_step(step: int, saved_batch: int, batch: int, rows: int) -> int:
    """A step count taken with global batch `saved_batch`, in steps of global batch `batch`.

    Same epoch; within it, the global batch that holds the first row not yet trained on
    (rounded down, so at most batch − 1 rows are trained on twice), never past its last step.
    """
    if saved_batch == batch or saved_batch < 1:
        return step
    old_per = max(1, rows // saved_batch)
    new_per = max(1, rows // batch)
    epoch, i = divmod(step, old_per)
    return epoch * new_per + min(i * saved_batch // batch, new_per - 1)


@contextlib.contextmanager
def session(context: DistContext, device: str = "auto") -> Iterator[Dist]:
    """Join the torchrun process group for the duration of a command (nothing to join in a
    single process). nccl for CUDA devices, gloo on the CPU; leaves the group at exit.

    torch.distributed itself reads MASTER_ADDR/MASTER_PORT (`env://`), as torchrun arranges.
    """
    if not context.distributed:
        yield Dist(context)
        return
    import torch
    import torch.distributed as td

    from lossxfer.backend import resolve_device

    context.check_device(device)
    dev = resolve_device(device)
    if dev.type == "cuda":
        if context.local_rank >= torch.cuda.device_count():
            raise DeviceError(
                f"LOCAL_RANK {context.local_rank}: only {torch.cuda.device_count()} CUDA "
                "device(s) on this node (--nproc-per-node too large?)"
            )
        dev = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(dev)  # "cuda" / "auto" now mean this rank's GPU
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not td.is_available():
        raise DeviceError("torch.distributed is not available in this PyTorch build")
    try:
        td.init_process_group(
            backend,
            init_method="env://",
            rank=context.rank,
            world_size=context.world_size,
            device_id=dev if dev.type == "cuda" else None,
        )
    except (RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DeviceError(
            f"cannot join the torchrun process group ({backend}, rank {context.rank} of "
            f"{context.world_size}): {first}"
        ) from None
    ok = False
    cpu_group: Any = None
    try:
        cpu_group = td.new_group(backend="gloo") if backend == "nccl" else None
        LOG.debug("rank %d/%d joined (%s on %s)", context.rank, context.world_size, backend, dev)
        yield Dist(context, dev, backend, cpu_group)
        ok = True
    finally:
        if ok:  # a failing rank must not wait here for ranks that are still working
            td.barrier(group=cpu_group)
        td.destroy_process_group()
