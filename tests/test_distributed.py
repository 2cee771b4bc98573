"""Data-parallel training under torchrun: the launch context, sharding, exact-once evaluation,
coordinated stopping, and 2-process CPU (gloo) runs of the `train` verb through `torchrun`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import REPO

from lossxfer.distributed import Dist, DistContext, rescale_step
from lossxfer.errors import UsageError

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
# One thread per process: two processes on two cores, no oversubscription.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def torchrun(nproc: int, *args: object, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TORCHRUN, str(nproc), *map(str, args)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        **kw,  # type: ignore[call-overload]
    )


# ---------------------------------------------------------------------------------------------
# The launch context (what the CLI reads) and the single-process Dist.


def test_context_from_env() -> None:
    assert DistContext.from_env({}) == DistContext(0, 1, 0, 1)
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    ctx = DistContext.from_env(env)
    assert ctx == DistContext(3, 8, 1, 2)
    assert ctx.distributed and not ctx.is_main
    assert DistContext.from_env({"RANK": "0", "WORLD_SIZE": "1"}).distributed is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "0"}, "WORLD_SIZE is not"),
        ({"WORLD_SIZE": "2"}, "RANK is not"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x'"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "0 ≤ RANK < WORLD_SIZE"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"}, "LOCAL"),
    ],
)
def test_context_rejects_a_broken_launch(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        DistContext.from_env(env)
    assert caught.value.exit_code == 2


def test_explicit_gpu_index_is_refused_under_torchrun() -> None:
    DistContext(0, 2).check_device("cuda")
    DistContext(0, 1).check_device("cuda:1")
    with pytest.raises(UsageError, match="cuda:LOCAL_RANK"):
        DistContext(0, 2).check_device("cuda:1")


def test_single_process_dist_is_the_identity() -> None:
    dist = Dist()
    order = torch.randperm(10)
    assert dist.shard(order) is order
    assert torch.equal(dist.eval_rows(5), torch.arange(5))
    assert dist.agree_stop(None) is None and dist.agree_stop(15) == 15
    losses = [torch.tensor(1.0), torch.tensor(2.0)]
    assert dist.mean_losses(losses) is losses
    net = torch.nn.Linear(2, 2)
    assert dist.wrap(net) is net and dist.replicate(net) is net
    dist.barrier()


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_is_distributed_sampler_on_the_same_permutation(world: int) -> None:
    """Rank r's rows of whole global batches = DistributedSampler(drop_last) over the epoch's
    permutation; global batch j on all ranks together = rows [jG, (j+1)G) of the permutation."""
    from torch.utils.data import DistributedSampler

    batch, steps = 5, 3
    global_batch = batch * world
    order = torch.randperm(100, generator=torch.Generator().manual_seed(1))[: steps * global_batch]
    shards = [Dist(DistContext(r, world)).shard(order) for r in range(world)]
    for rank, shard in enumerate(shards):
        sampler = DistributedSampler(range(len(order)), world, rank, shuffle=False, drop_last=True)
        assert shard.tolist() == order[list(sampler)].tolist()
    for j in range(steps):
        together = sorted(x for s in shards for x in s[j * batch : (j + 1) * batch].tolist())
        assert together == sorted(order[j * global_batch : (j + 1) * global_batch].tolist())


@pytest.mark.parametrize(("n", "world"), [(360, 2), (7, 3), (2, 4), (0, 2)])
def test_eval_rows_cover_each_row_once(n: int, world: int) -> None:
    rows = [Dist(DistContext(r, world)).eval_rows(n).tolist() for r in range(world)]
    assert sorted(x for part in rows for x in part) == list(range(n))


def test_rescale_step_keeps_the_epoch_and_the_rows_seen() -> None:
    rows = 100  # global batch 10: 10 steps/epoch; 20: 5 steps/epoch; 30: 3 steps/epoch
    assert rescale_step(13, 10, 10, rows) == 13
    assert rescale_step(20, 10, 20, rows) == 10  # epoch boundary: exact
    assert rescale_step(10, 20, 10, rows) == 20
    assert rescale_step(13, 10, 20, rows) == 5 + 1  # 30 rows of epoch 2 seen → batch 1 of 20
    assert rescale_step(3, 20, 10, rows) == 6
    assert rescale_step(9, 10, 30, rows) == 2  # 90 rows seen, but epoch has 3 steps: last one
    assert rescale_step(7, 0, 10, rows) == 7  # a state from before the global batch was saved


# ---------------------------------------------------------------------------------------------
# Two processes through torchrun (gloo on the CPU).

COLLECTIVES = """
import os, sys, torch
from lossxfer.distributed import DistContext, session

ctx = DistContext.from_env(os.environ)
with session(ctx, "cpu") as dist:
    assert dist.distributed and dist.backend == "gloo" and dist.world_size == 2
    # exact-once evaluation rows over an odd count
    rows = dist.eval_rows(7)
    assert int(dist.sum(torch.tensor([len(rows)]))[0]) == 7
    assert int(dist.sum(rows.sum().reshape(1))[0]) == sum(range(7))
    # the stop flag: only rank 1 was signalled, both see it
    assert dist.agree_stop(signal_ := (15 if dist.rank == 1 else None)) == 15
    assert dist.agree_stop(None) is None
    # losses averaged: every rank sees the same values, a NaN anywhere reaches everyone
    losses = dist.mean_losses([torch.tensor(float(dist.rank)), torch.tensor(2.0)])
    assert [float(x) for x in losses] == [0.5, 2.0]
    bad = dist.mean_losses([torch.tensor(float("nan") if dist.rank else 1.0)])
    assert bad[0].isnan()
    # replicate: rank 0's weights and buffers everywhere
    net = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        net.weight.fill_(dist.rank + 1.0)
        net.running_mean.fill_(dist.rank + 5.0)
    dist.replicate(net)
    assert net.weight.eq(1.0).all() and net.running_mean.eq(5.0).all()
    # DDP averages gradients across ranks
    model = torch.nn.Linear(1, 1, bias=False)
    ddp = dist.wrap(model)
    ddp(torch.full((1, 1), float(dist.rank + 1))).sum().backward()
    assert float(model.weight.grad) == 1.5, float(model.weight.grad)
print("ok", ctx.rank)
"""


@pytest.mark.slow
def test_collectives_across_two_processes(tmp_path: Path) -> None:
    script = tmp_path / "collectives.py"
    script.write_text(textwrap.dedent(COLLECTIVES))
    run = torchrun(2, script)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(run.stdout.split()) == ["0", "1", "ok", "ok"]
