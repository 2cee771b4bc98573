"""The training loop and the `train` verb: resume equals uninterrupted, signals, divergence."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO

from lossxfer import loop
from lossxfer import train as train_mod
from lossxfer.checkpoint import load_checkpoint, load_tensors
from lossxfer.errors import Interrupted, Preempted, UsageError
from lossxfer.fsio import sha256
from lossxfer.objectives.softmax import Softmax
from lossxfer.results import load_result
from lossxfer.train import OptimConfig, RunOptions, TrainConfig, train

DATA = "synthetic:classes=3,size=8,train=20,test=10"  # 54 train rows → 3 steps of 16 per epoch
PER_EPOCH = 3


def config(**changes: object) -> TrainConfig:
    """Two epochs with dropout (exercises the global RNG) and EMA (exercises its state)."""
    base = TrainConfig(
        data=DATA,
        loss="dropout",
        optim=OptimConfig(epochs=2, batch_size=16, lr=0.05, ema=0.9),
        run=RunOptions(device="cpu", seed=3, deterministic=True),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_tensors(path)[0]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run that the other tests compare against."""
    out = tmp_path_factory.mktemp("reference")
    train(config(), out)
    return out


def signal_at(step: int, signum: int):
    """A progress callback that sends `signum` to this process after training step `step`."""
    calls = []

    def progress(description: str, done: int, total: int | None) -> None:
        calls.append(done)
        if len(calls) == step:
            signal.raise_signal(signum)

    return progress


@pytest.mark.parametrize(
    ("signum", "step", "error"),
    [
        (signal.SIGTERM, PER_EPOCH + 1, Preempted),  # mid-epoch: resume inside epoch 2
        (signal.SIGINT, PER_EPOCH, Interrupted),  # at the end of epoch 1
    ],
)
def test_resume_equals_uninterrupted(
    tmp_path: Path, reference: Path, signum: int, step: int, error: type[Exception]
) -> None:
    previous = signal.getsignal(signum)
    with pytest.raises(error) as caught:
        train(config(), tmp_path, progress=signal_at(step, signum))
    assert caught.value.exit_code == (143 if signum == signal.SIGTERM else 130)
    assert "--resume" in str(caught.value)
    assert signal.getsignal(signum) is previous  # handlers restored after training
    saved = tensors(tmp_path / "state.safetensors")
    assert int(saved["position/step"][0]) == step
    assert not (tmp_path / "train.json").exists()
    assert not (tmp_path / "model.safetensors").exists()  # a model file means a finished run

    train(config(), tmp_path, resume=True)
    assert_same(tensors(tmp_path / "model.safetensors"), tensors(reference / "model.safetensors"))
    assert not (tmp_path / "state.safetensors").exists()  # finished: the state is gone
    resumed = json.loads((tmp_path / "train.json").read_text())["metrics"]
    uninterrupted = json.loads((reference / "train.json").read_text())["metrics"]
    assert resumed["loss_curve"] == uninterrupted["loss_curve"]
    assert resumed["test_top1"] == uninterrupted["test_top1"]


@pytest.mark.slow
def test_same_seed_same_weights_other_seed_differs(tmp_path: Path, reference: Path) -> None:
    train(config(), tmp_path / "again")
    assert_same(
        tensors(tmp_path / "again/model.safetensors"), tensors(reference / "model.safetensors")
    )
    other = config(run=RunOptions(device="cpu", seed=4, deterministic=True))
    train(other, tmp_path / "other")
    a, b = tensors(tmp_path / "other/model.safetensors"), tensors(reference / "model.safetensors")
    assert not torch.equal(a["head.weight"], b["head.weight"])


def test_resume_of_a_complete_run_does_nothing_unless_the_configuration_differs(
    reference: Path,
) -> None:
    before = (reference / "model.safetensors").stat().st_mtime_ns
    again = train(config(), reference, resume=True)
    assert again.metrics == load_result(reference / "train.json").metrics
    assert (reference / "model.safetensors").stat().st_mtime_ns == before
    changed = config(optim=OptimConfig(epochs=3, batch_size=16, lr=0.1, ema=0.9))
    with pytest.raises(UsageError) as caught:
        train(changed, reference, resume=True)
    # only the differing keys, not whole configurations
    assert "(epochs: saved 2, now 3; lr: saved 0.05, now 0.1)" in str(caught.value)


def test_resume_without_state_starts_fresh_and_equals_uninterrupted(
    tmp_path: Path, reference: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="lossxfer"):
        train(config(), tmp_path, resume=True)
    assert "no saved state to resume from; starting from scratch" in caplog.text
    assert_same(tensors(tmp_path / "model.safetensors"), tensors(reference / "model.safetensors"))


def test_resume_refuses_a_state_of_another_configuration(tmp_path: Path) -> None:
    with pytest.raises(Preempted):
        train(config(), tmp_path, progress=signal_at(2, signal.SIGTERM))
    with pytest.raises(UsageError, match=r"\(batch_size: saved 16, now 8\)"):
        train(config(optim=OptimConfig(epochs=2, batch_size=8, lr=0.05, ema=0.9)), tmp_path,
              resume=True)  # fmt: skip


def test_record_and_checkpoint(reference: Path) -> None:
    record = json.loads((reference / "train.json").read_text())
    metrics = record["metrics"]
    assert record["kind"] == "train"
    assert metrics["epochs"] == 2 and metrics["steps"] == 2 * PER_EPOCH
    assert len(metrics["loss_curve"]) == 2
    assert metrics["test_top5"] == 1.0  # top-min(5, K) with K = 3 classes
    assert 0.0 <= metrics["val_top1"] <= 1.0
    assert record["model"]["checkpoint_sha256"] == sha256(reference / "model.safetensors")
    assert record["dataset"]["spec"] == DATA
    assert record["timing"]["images_per_s"] > 0
    _, meta = load_checkpoint(reference / "model.safetensors")
    assert meta.objective == "dropout" and meta.num_classes == 3
    assert meta.metrics["test_top1"] == metrics["test_top1"]
    # What was used, next to what was asked: lr None resolved by the scaling rule.
    training = record["model"]["training"]
    assert training == meta.training
    assert (training["lr"], training["epochs"], training["batch_size"]) == (0.05, 2, 16)
    assert training["ema"] == 0.9 and training["weight_decay"] == 8e-5
    resolved = record["config"]["resolved"]
    assert resolved["threads"] >= 1 and resolved["device"] == "cpu"
    assert resolved["torch_version"] == torch.__version__ and resolved["world_size"] == 1
    assert {"out", "resume", "force"}.isdisjoint(record["config"])  # invocation, not config
    assert {"out", "resume", "force"}.isdisjoint(meta.config)


def test_resolved_lr_is_recorded_when_not_given(tmp_path: Path) -> None:
    optim = OptimConfig(epochs=1, batch_size=8, lr=None)
    record = train(config(optim=optim, loss="softmax"), tmp_path)
    assert record.config["optim"]["lr"] is None  # asked: the default
    assert record.model["training"]["lr"] == pytest.approx(optim.base_lr)  # used


def test_default_lr_is_scaled_by_the_objective(tmp_path: Path) -> None:
    """squared_error's default rate is 0.016 × the scaling rule's; an explicit --lr is not."""
    optim = OptimConfig(epochs=1, batch_size=8, lr=None)
    record = train(config(optim=optim, loss="squared_error"), tmp_path / "default")
    assert record.model["training"]["lr"] == pytest.approx(0.016 * 0.1 * 8 / 256)
    optim = OptimConfig(epochs=1, batch_size=8, lr=0.001)
    record = train(config(optim=optim, loss="squared_error"), tmp_path / "given")
    assert record.model["training"]["lr"] == pytest.approx(0.001)


class NanFromStep(Softmax):
    """Softmax whose loss turns NaN from the 5th call (epoch 2, step 2 with 3 steps/epoch)."""

    calls: list[int] = []  # noqa: RUF012

    def loss(self, logits, targets, head):  # type: ignore[no-untyped-def]
        self.calls.append(1)
        value = super().loss(logits, targets, head)
        return value * math.nan if len(self.calls) >= 5 else value


def test_divergence_exits_5_and_keeps_last_good_checkpoint(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    NanFromStep.calls.clear()
    monkeypatch.setattr(train_mod, "make_objective", lambda name, opts: NanFromStep())
    args = ["train", "--data", DATA, "--batch-size", 16, "--epochs", 3, "--device", "cpu"]
    run = cli(*args, "-o", tmp_path)
    assert run.code == 5
    assert "epoch 2 step 2/3" in run.stderr
    assert "the state of epoch 1 is kept" in run.stderr
    assert not (tmp_path / "model.safetensors").exists()  # no model of an unfinished run
    assert int(tensors(tmp_path / "state.safetensors")["position/step"][0]) == PER_EPOCH
    assert not (tmp_path / "train.json").exists()


def test_cli_refuses_to_overwrite_before_training(cli, reference: Path) -> None:
    started = time.perf_counter()
    run = cli("train", "--data", DATA, "-o", reference)
    assert run.code == 2 and "exists" in run.stderr
    assert time.perf_counter() - started < 5
    run = cli("train", "--data", DATA, "--batch-size", 0, "-o", reference / "new")
    assert run.code == 2 and "--batch-size" in run.stderr


def test_weight_decay_skips_batchnorm_and_biases() -> None:
    from lossxfer.data import load_data
    from lossxfer.models import build_network

    data = load_data(DATA)
    network = build_network("smallcnn", data.input, Softmax(), 3)
    decay, no_decay = loop._param_groups(network, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in network.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    layers = (torch.nn.Conv2d, torch.nn.Linear)
    assert decayed == {f"{n}.weight" for n, m in network.named_modules() if isinstance(m, layers)}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(network.parameters()))


def test_learning_rate_warmup_then_cosine() -> None:
    lrs = [loop._lr_at(s, total=10, warmup=2, base=0.4) for s in range(10)]
    assert lrs[:3] == pytest.approx([0.2, 0.4, 0.4])
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))
    assert lrs[6] == pytest.approx(0.2 * (1 + math.cos(math.pi * 4 / 8)))
    assert 0 < lrs[-1] < 0.02


@pytest.mark.slow
def test_sigterm_saves_state_exits_143_and_resume_finishes(tmp_path: Path) -> None:
    """The SLURM requeue path, end to end in a fresh process."""
    args = [sys.executable, "-m", "lossxfer", "train", "--data", "synthetic:classes=3,train=60"]
    args += ["--epochs", "3", "--batch-size", "16", "--device", "cpu", "-o", str(tmp_path)]
    proc = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "epoch 1/3" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 143, rest
    assert "SIGTERM" in rest and "--resume" in rest
    step = int(tensors(tmp_path / "state.safetensors")["position/step"][0])
    assert 0 < step < 3 * 10
    resumed = subprocess.run(
        [*args, "--resume", "--json"], cwd=REPO, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["metrics"]["epochs"] == 3


@pytest.mark.slow
def test_sigterm_during_start_up_then_the_same_resume_line_finishes(tmp_path: Path) -> None:
    """A requeue script always passes --resume: a SIGTERM before the first state was saved
    (imports, data loading) must not make the next run fail."""
    args = [sys.executable, "-m", "lossxfer", "train", "--data", "synthetic:classes=3,train=20"]
    args += ["--epochs", "1", "--batch-size", "16", "--device", "cpu", "-o", str(tmp_path)]
    args += ["--resume"]
    proc = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # well before the first epoch ends
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    assert not (tmp_path / "model.safetensors").exists()
    resumed = subprocess.run([*args, "--json"], cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "no saved state to resume from; starting from scratch" in resumed.stderr
    assert json.loads(resumed.stdout)["metrics"]["epochs"] == 1
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0 and "already complete" in again.stderr
