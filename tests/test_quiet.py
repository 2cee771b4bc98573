"""-q does what it says in every verb: nothing on stdout or stderr except errors and what is
asked for explicitly (--json, -o -)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = "synthetic:classes=3,size=8,train=8,test=4"
CPU = ["--device", "cpu"]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run with a store and the records every verb reads."""
    from lossxfer.extract import ExtractConfig, run_extract
    from lossxfer.loop import OptimConfig, RunOptions
    from lossxfer.train import TrainConfig, train

    run = tmp_path_factory.mktemp("quiet")
    train(TrainConfig(DATA, optim=OptimConfig(epochs=1), run=RunOptions(device="cpu")), run)
    for i in range(2):
        run_extract(
            ExtractConfig(
                checkpoint=str(run / "model.safetensors"),
                data=DATA,
                out=str(run / f"part{i}.h5"),
                splits=("train", "test"),
                device="cpu",
                shard=f"{i}/2",
            )
        )
    run_extract(
        ExtractConfig(
            checkpoint=str(run / "model.safetensors"),
            data=DATA,
            out=str(run / "acts.h5"),
            splits=("train", "test"),
            device="cpu",
        )
    )
    return run


def verbs(run: Path, out: Path) -> dict[str, list[object]]:
    """Every verb, writing its outputs under `out`."""
    ckpt, acts = run / "model.safetensors", run / "acts.h5"
    return {
        "train": ["train", "--data", DATA, "--epochs", 1, *CPU, "-o", out / "run"],
        "train --resume (complete)": [
            "train",
            "--data",
            DATA,
            "--epochs",
            1,
            *CPU,
            "-o",
            run,
            "--resume",
        ],
        "train --resume (no state)": [
            "train",
            "--data",
            DATA,
            "--epochs",
            1,
            *CPU,
            "-o",
            out / "fresh",
            "--resume",
        ],
        "extract": ["extract", ckpt, "--data", DATA, *CPU, "-o", out / "acts.h5"],
        "probe": ["probe", acts, "--method", "knn", "-o", out / "probe.json"],
        "separation": ["separation", acts, "-o", out / "sep.json"],
        "cka": ["cka", acts, "--backend", "numpy", "-o", out / "cka.json"],
        "cka --shard": [
            "cka",
            acts,
            "--backend",
            "numpy",
            "--shard",
            "0/2",
            "-o",
            out / "cka0.h5",
        ],
        "finetune": [
            "finetune",
            ckpt,
            "--data",
            DATA,
            "--lr",
            "0.01",
            "--weight-decay",
            "0",
            "--steps",
            1,
            *CPU,
            "-o",
            out / "ft",
        ],
        "store merge": [
            "store",
            "merge",
            run / "part0.h5",
            run / "part1.h5",
            "-o",
            out / "merged.h5",
        ],
        "report": ["report", run / "train.json", "-o", out / "report.md"],
        "info": ["info", ckpt, acts, run / "train.json"],
        "objectives": ["objectives"],
    }


NAMES = list(verbs(Path("r"), Path("o")))


@pytest.mark.parametrize("verb", NAMES)
def test_quiet_prints_nothing(cli, made: Path, tmp_path: Path, verb: str) -> None:  # type: ignore[no-untyped-def]
    run = cli(*verbs(made, tmp_path)[verb], "-q")
    assert run.code == 0, run.stderr
    assert (run.stdout, run.stderr) == ("", "")


@pytest.mark.parametrize("verb", [v for v in NAMES if v not in ("cka --shard", "store merge")])
def test_quiet_json_prints_exactly_the_document(cli, made: Path, tmp_path: Path, verb: str) -> None:  # type: ignore[no-untyped-def]
    argv = verbs(made, tmp_path)[verb]
    if verb == "report":  # its JSON goes where -o says: here, stdout
        argv = argv[:-2]
    run = cli(*argv, "-q", "--json")
    assert run.code == 0, run.stderr
    assert run.stderr == ""
    json.loads(run.stdout)  # one document, nothing else


def test_quiet_keeps_the_error_line(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = cli("probe", tmp_path / "missing.h5", "-q")
    assert run.code == 3 and run.stdout == ""
    assert run.stderr.startswith("lossxfer: error: ") and len(run.stderr.splitlines()) == 1


def test_quiet_report_to_stdout_when_asked_with_o_dash(cli, made: Path) -> None:  # type: ignore[no-untyped-def]
    run = cli("report", made / "train.json", "--format", "markdown", "-o", "-", "-q")
    assert run.code == 0 and run.stderr == ""
    assert "softmax" in run.stdout
