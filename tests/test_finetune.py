"""Fine-tuning: new head on the checkpoint's backbone, grid on validation, refit without test."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from lossxfer import finetune as ft
from lossxfer.checkpoint import load_checkpoint, load_tensors
from lossxfer.data import Source, TensorImages, load_data
from lossxfer.errors import DivergedError, Preempted, UsageError
from lossxfer.fsio import sha256
from lossxfer.objectives import make_objective
from lossxfer.train import OptimConfig, RunOptions, TrainConfig, train

DATA = "synthetic:classes=6,train=20,test=10"
CPU = RunOptions(device="cpu", seed=1, deterministic=True)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint trained with cosine softmax on classes 0-2 of DATA."""
    out = tmp_path_factory.mktemp("source")
    cfg = TrainConfig(
        DATA,
        loss="cosine_softmax",
        classes=(0, 1, 2),
        optim=OptimConfig(epochs=1, batch_size=16),
        run=CPU,
    )
    train(cfg, out)
    return out / "model.safetensors"


def config(source: Path, **changes: Any) -> ft.FinetuneConfig:
    base = ft.FinetuneConfig(
        checkpoint=str(source),
        data=DATA,
        classes=(3, 4, 5, 1),
        lrs=(0.1, 0.01),
        weight_decays=(0.0,),
        epochs=1,
        batch_size=16,
        run=CPU,
    )
    return dataclasses.replace(base, **changes)


def test_backbone_is_the_checkpoints_and_head_is_new(source: Path) -> None:
    network, _ = load_checkpoint(source)
    tensors = load_tensors(source)[0]
    tuned = ft.with_new_head(network, make_objective("softmax"), 4)
    for key, value in tuned.backbone.state_dict().items():
        assert torch.equal(value, tensors[f"backbone.{key}"]), key
    assert tuned(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    assert type(tuned.head) is torch.nn.Linear  # softmax's head, not cosine softmax's
    assert tuned.backbone is not network.backbone  # cells never share weights


@pytest.mark.slow
def test_record_checkpoint_and_frozen_backbone(source: Path, tmp_path: Path) -> None:
    result = ft.finetune(config(source, freeze_backbone=True), tmp_path)
    metrics = result.metrics
    assert [c["lr"] for c in metrics["val_grid"]] == [0.1, 0.01]
    assert metrics["chosen"]["lr"] == metrics["val_grid"][ft.choose(metrics["val_grid"])]["lr"]
    assert 0 <= metrics["test_top1"] <= 1 and metrics["test_top5"] == 1.0  # K = 4 < 5
    assert result.model["checkpoint_sha256"] == sha256(source)  # grouped by pre-training
    assert result.model["objective"] == "cosine_softmax"
    assert result.dataset["classes"] == [1, 3, 4, 5]
    _, meta = load_checkpoint(tmp_path / "model.safetensors")
    assert meta.extra["source_sha256"] == sha256(source)
    assert meta.extra["source_objective"] == "cosine_softmax"
    assert meta.objective == "softmax" and meta.num_classes == 4
    assert json.loads((tmp_path / "finetune.json").read_text())["kind"] == "finetune"
    # Frozen: weights and BatchNorm statistics of the backbone untouched, the head trained.
    before = load_tensors(source)[0]
    after = load_tensors(tmp_path / "model.safetensors")[0]
    backbone = [k for k in before if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)
    for key in backbone:
        assert torch.equal(before[key], after[key]), key
    fresh = ft.with_new_head(load_checkpoint(source)[0], make_objective("softmax"), 4)
    assert not torch.equal(after["head.weight"], fresh.head.weight)


def test_grid_choice_is_validation_argmax() -> None:
    grid = [
        {"lr": 1.0, "weight_decay": 0, "val_top1": None, "diverged": True},
        {"lr": 0.1, "weight_decay": 0, "val_top1": 0.5, "diverged": False},
        {"lr": 0.1, "weight_decay": 1, "val_top1": 0.9, "diverged": False},
        {"lr": 0.01, "weight_decay": 0, "val_top1": 0.9, "diverged": False},
    ]
    assert ft.choose(grid) == 2  # the argmax, the first of ties
    with pytest.raises(DivergedError):
        ft.choose(grid[:1])


@pytest.mark.slow
def test_diverged_cell_is_recorded_and_refit_never_sees_test(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cell lr=0.1 diverges; the sweep goes on, and the refit trains on exactly train+val."""
    seen: dict[str, Any] = {}
    real_fit = ft.fit

    def fit(network, objective, split, optim, run, **kw):  # type: ignore[no-untyped-def]
        seen[kw["label"].split()[0]] = split
        if kw["label"].startswith("cell0"):
            raise DivergedError("training diverged: loss is nan at epoch 1 step 1/3")
        return real_fit(network, objective, split, optim, run, **kw)

    monkeypatch.setattr(ft, "fit", fit)
    result = ft.finetune(config(source), tmp_path)
    cell0, cell1 = result.metrics["val_grid"]
    assert cell0["diverged"] and cell0["val_top1"] is None
    assert not cell1["diverged"] and cell1["val_top1"] is not None
    assert result.metrics["chosen"] == {"lr": 0.01, "weight_decay": 0.0}

    data = load_data(DATA, [1, 3, 4, 5], 0.2, 0)
    train_rows, val_rows = data.split("train"), data.split("val")
    assert set(seen["cell1"].index) == set(train_rows.index)
    refit = seen["refit"]
    assert sorted(refit.index) == sorted([*train_rows.index, *val_rows.index])
    refit_images = refit.dataset.tensors()[0].flatten(1)
    test_images = data.split("test").dataset.tensors()[0].flatten(1)
    assert not (torch.cdist(refit_images, test_images) == 0).any()


def test_refit_with_an_official_val_split_joins_train_and_val() -> None:
    def split(n: int, offset: float) -> TensorImages:
        return TensorImages(torch.full((n, 1, 2, 2), offset), torch.arange(n).numpy() % 2)

    import numpy as np

    splits = {"train": split(6, 0.0), "val": split(4, 0.5), "test": split(4, 1.0)}
    labels = {k: np.arange(len(v)) % 2 for k, v in splits.items()}
    data = load_data(DATA)
    data = dataclasses.replace(data, classes=[0, 1], source=Source(splits, labels, 2, data.input))
    joined = ft.train_plus_val(data)
    images = torch.stack([joined.dataset[i][0] for i in range(len(joined))])
    assert len(joined) == 10 and sorted(joined.labels.tolist()) == [0] * 5 + [1] * 5
    assert not (images == (1.0 - 0.5) / 0.29).any()  # no normalised test pixel


@pytest.mark.slow
def test_resume_after_preemption_equals_uninterrupted(source: Path, tmp_path: Path) -> None:
    whole = ft.finetune(config(source), tmp_path / "whole")
    calls: list[int] = []

    def preempt_in_cell1(description: str, done: int, total: int | None) -> None:
        calls.append(done)
        if description.startswith("cell1") and done == 2:
            signal.raise_signal(signal.SIGTERM)

    with pytest.raises(Preempted, match=r"cell1\.state\.safetensors"):
        ft.finetune(config(source), tmp_path / "cut", progress=preempt_in_cell1)
    assert len(json.loads((tmp_path / "cut/cells/grid.state").read_text())["cells"]) == 1
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["cells"]  # no result yet
    with pytest.raises(UsageError, match=r"\(lrs: saved \[0.1, 0.01\], now \[0.1, 0.02\]\)"):
        ft.finetune(config(source, lrs=(0.1, 0.02)), tmp_path / "cut", resume=True)
    resumed = ft.finetune(config(source), tmp_path / "cut", resume=True)
    assert resumed.metrics["val_grid"] == whole.metrics["val_grid"]
    a = load_tensors(tmp_path / "whole/model.safetensors")[0]
    b = load_tensors(tmp_path / "cut/model.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == [
        "finetune.json",
        "model.safetensors",
    ]
    again = ft.finetune(config(source), tmp_path / "cut", resume=True)  # complete: a no-op
    assert again.metrics == resumed.metrics


def test_cli_finetune_json(cli, source: Path, tmp_path: Path) -> None:
    args = ["finetune", source, "--data", DATA, "--classes", "3-5", "--lr", "0.05"]
    args += ["--weight-decay", "0,1e-4", "--steps", "2", "--device", "cpu", "--json"]
    run = cli(*args, "-o", tmp_path)
    assert run.code == 0, run.stderr
    record = json.loads(run.stdout)
    assert len(record["metrics"]["val_grid"]) == 2 and record["metrics"]["steps"] == 2
    resolved = record["config"]["resolved"]  # what was used, beside what was asked
    assert (resolved["lr"], resolved["steps"], resolved["batch_size"]) == (0.05, 2, 128)
    assert resolved["lr_grid"] == [0.05] and resolved["weight_decay_grid"] == [0.0, 1e-4]
    assert resolved["device"] == "cpu" and resolved["threads"] >= 1 and resolved["torch_version"]
    assert record["model"]["training"]["epochs"] == 1  # the source checkpoint's training
    _, meta = load_checkpoint(tmp_path / "model.safetensors")
    assert meta.training["lr"] == 0.05 and meta.training["refit"] is True
    assert cli(*args, "-o", tmp_path).code == 2  # refuses to overwrite
    assert cli(*args[:-1], "--lr", "x", "-o", tmp_path / "n").code == 2
