"""Data-parallel training under torchrun: the launch context, sharding, exact-once evaluation,
coordinated stopping, and 2-process CPU (gloo) runs of the `train` verb through `torchrun`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO

from lossxfer.checkpoint import load_tensors
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


def test_a_forwarded_copy_of_ctrl_c_still_saves_state_a_late_second_one_stops_at_once(
    tmp_path: Path,
) -> None:
    """Under torchrun a rank gets Ctrl-C twice within moments (the terminal's and torchrun's
    copy): that is one Ctrl-C, state is saved. A second Ctrl-C a second later stops at once."""
    from lossxfer.errors import Interrupted
    from lossxfer.train import OptimConfig, RunOptions, TrainConfig, train

    def config() -> TrainConfig:
        return TrainConfig(
            data="synthetic:classes=3,size=8,train=20,test=5",
            optim=OptimConfig(epochs=2, batch_size=16),
            run=RunOptions(device="cpu"),
        )

    def twice(pause: float):  # type: ignore[no-untyped-def]
        def progress(description: str, done: int, total: int | None) -> None:
            if done == 2:
                signal.raise_signal(signal.SIGINT)
                time.sleep(pause)
                signal.raise_signal(signal.SIGINT)

        return progress

    with pytest.raises(Interrupted, match="--resume"):
        train(config(), tmp_path / "a", progress=twice(0.0))
    assert int(load_tensors(tmp_path / "a" / "state.safetensors")[0]["position/step"][0]) == 2
    with pytest.raises(KeyboardInterrupt):
        train(config(), tmp_path / "b", progress=twice(1.05))


# ---------------------------------------------------------------------------------------------
# Two processes through torchrun (gloo on the CPU).

COLLECTIVES = """
import os, sys, torch
from lossxfer.checkpoint import load_tensors
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
    # evaluate: 3 × 7 = 21 test rows over 2 ranks (11 + 10): the same fractions as one
    # process scoring every row (a padded or dropped row would change the denominator)
    from lossxfer.data import load_data
    from lossxfer.models import build_network
    from lossxfer.objectives.softmax import Softmax
    from lossxfer.train import evaluate

    data = load_data("synthetic:classes=3,size=8,train=4,test=7")
    torch.manual_seed(0)
    network = dist.replicate(build_network("smallcnn", data.input, Softmax(), 3))
    test = data.split("test")
    assert len(test) == 21 and len(dist.eval_rows(21)) == (11 if dist.rank == 0 else 10)
    cpu = torch.device("cpu")
    assert evaluate(network, Softmax(), test, cpu, dist=dist) == evaluate(
        network, Softmax(), test, cpu
    )
print(f"ok{ctx.rank}", flush=True)
"""


@pytest.mark.slow
def test_collectives_across_two_processes(tmp_path: Path) -> None:
    script = tmp_path / "collectives.py"
    script.write_text(textwrap.dedent(COLLECTIVES))
    run = torchrun(2, script)
    assert run.returncode == 0, run.stderr[-3000:]
    # Two processes share stdout, so lines may interleave: count the tokens, not the lines.
    assert sorted(re.findall(r"ok\d", run.stdout)) == ["ok0", "ok1"]


TRAIN = ["-m", "lossxfer", "train", "--data", "digits", "--device", "cpu", "--split-seed", "1"]


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path: Path) -> None:
    """Same global batch (2 × 16 = 1 × 32), same steps and learning rate: one checkpoint, one
    record, accuracy in line with one process; the 2-process evaluation scored each test row
    once (it equals a 1-process evaluation of the saved checkpoint)."""
    from lossxfer.checkpoint import load_checkpoint
    from lossxfer.data import load_data
    from lossxfer.objectives import make_objective
    from lossxfer.train import evaluate

    single = subprocess.run(
        [sys.executable, *TRAIN, "--epochs", "3", "--batch-size", "32", "-o", tmp_path / "one"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    run = torchrun(
        2, *TRAIN[1:], "--epochs", 3, "--batch-size", 16, "-o", tmp_path / "two", "--json"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads(run.stdout)  # exactly one JSON document: only rank 0 prints
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "model.safetensors",
        "train.json",
    ]  # finished: the state is gone
    assert json.loads((tmp_path / "two" / "train.json").read_text()) == record
    reference = json.loads((tmp_path / "one" / "train.json").read_text())
    assert record["timing"]["world_size"] == 2 and reference["timing"]["world_size"] == 1
    assert record["metrics"]["steps"] == reference["metrics"]["steps"] == 3 * (1294 // 32)
    for key in ("val_top1", "test_top1"):
        assert abs(record["metrics"][key] - reference["metrics"][key]) <= 0.05, key
    assert record["metrics"]["test_top1"] > 0.8

    network, meta = load_checkpoint(tmp_path / "two" / "model.safetensors")
    data = load_data("digits", split_seed=1)
    again = evaluate(
        network,
        make_objective(meta.objective, meta.objective_opts),
        data.split("test"),
        torch.device("cpu"),
    )
    assert again["top1"] == record["metrics"]["test_top1"]
    assert again["top5"] == record["metrics"]["test_top5"]

    # finetune under torchrun: one grid cell, rank 0 writes the run directory alone
    ft = tmp_path / "ft"
    run = torchrun(
        2, "-m", "lossxfer", "finetune", tmp_path / "two" / "model.safetensors", "--data",
        "digits", "--classes", "5-9", "--lr", "0.02", "--weight-decay", "0", "--epochs", 1,
        "--batch-size", 16, "--no-refit", "--device", "cpu", "-o", ft, "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    finetuned = json.loads(run.stdout)
    assert finetuned["kind"] == "finetune" and finetuned["metrics"]["test_top1"] > 0.5
    assert sorted(p.name for p in ft.iterdir()) == ["finetune.json", "model.safetensors"]


@pytest.mark.slow
def test_sigterm_to_the_launcher_then_resume_on_one_process(tmp_path: Path) -> None:
    """torchrun forwards SIGTERM to both ranks; they agree on one step, rank 0 saves, both
    exit 143 (torchrun itself exits non-zero); --resume with one process finishes the run."""
    epochs, per_epoch = 6, 1294 // 32
    args = [*TORCHRUN, "2", *TRAIN[1:], "--epochs", str(epochs), "--batch-size", "16"]
    args += ["-o", str(tmp_path)]
    proc = subprocess.Popen(args, cwd=REPO, env=ENV, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if f"epoch 1/{epochs}" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) != 0
    stops = re.findall(r"SIGTERM at epoch \d+ step \d+/\d+", rest)
    assert len(stops) == 2 and len(set(stops)) == 1, rest[-3000:]  # both ranks, same step
    assert "--resume" in rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.safetensors"]  # no model yet
    state = load_tensors(tmp_path / "state.safetensors")[0]
    step = int(state["position/step"][0])
    assert per_epoch < step < epochs * per_epoch
    assert int(state["position/batch"][0]) == 32
    epoch, i = divmod(step - 1, per_epoch)  # the last step taken, 0-based
    assert stops[0] == f"SIGTERM at epoch {epoch + 1} step {i + 1}/{per_epoch}"

    resumed = subprocess.run(
        [
            sys.executable,
            *TRAIN,
            "--epochs",
            str(epochs),
            "--batch-size",
            "16",
            "-o",
            tmp_path,
            "--resume",
            "--json",
        ],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads(resumed.stdout)["metrics"]
    assert metrics["epochs"] == epochs and len(metrics["loss_curve"]) == epochs
    assert metrics["test_top1"] > 0.8


@pytest.mark.slow
def test_train_sbatch_requeues_on_usr1_and_the_requeued_task_resumes(tmp_path: Path) -> None:
    """examples/slurm/train.sbatch under a fake `scontrol`: USR1 to the batch shell (what
    `--signal=B:USR1@120` does) reaches both torchrun ranks as SIGTERM, the state is saved, the
    job asks to be requeued; the requeued task (here one process) resumes and finishes."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\n')
    (fake / "scontrol").chmod(0o755)
    env = {
        **ENV,
        "PATH": f"{fake}:{os.environ['PATH']}",
        "OUT": str(tmp_path / "study"),
        "DATA": "digits",
        "ARCH": "smallcnn",
        "OBJECTIVES": "softmax",
        "SEEDS": "1",
        "EPOCHS": "6",
        "BATCH_SIZE": "16",
        "SLURM_ARRAY_TASK_ID": "0",
        "SLURM_JOB_ID": "42",
        "LOSSXFER": f"{sys.executable} -m lossxfer",
        "LAUNCH": " ".join([*TORCHRUN, "2", "-m", "lossxfer"]),
    }
    script = REPO / "examples" / "slurm" / "train.sbatch"
    proc = subprocess.Popen(
        ["bash", str(script)], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "epoch 1/6" in line:
            proc.send_signal(signal.SIGUSR1)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) != 0, rest[-3000:]
    assert (tmp_path / "scontrol.log").read_text() == "requeue 42\n", rest[-3000:]
    stops = re.findall(r"SIGTERM at epoch \d+ step \d+/\d+", rest)
    assert len(stops) == 2 and len(set(stops)) == 1, rest[-3000:]
    run = tmp_path / "study" / "runs" / "softmax-s0"
    assert (run / "state.safetensors").exists() and not (run / "train.json").exists()

    requeued = subprocess.run(
        ["bash", str(script)],
        cwd=tmp_path,
        env={**env, "LAUNCH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert json.loads((run / "train.json").read_text())["metrics"]["epochs"] == 6
    assert (tmp_path / "scontrol.log").read_text() == "requeue 42\n"  # not requeued again
