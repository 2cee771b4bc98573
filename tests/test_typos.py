"""No typo passes: every name-valued option and spec key is checked before any work, with exit 2,
one line, the choices and a did-you-mean (lossxfer.registry.check_choice)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossxfer.loop import OptimConfig, RunOptions
from lossxfer.train import TrainConfig, train

DATA = "synthetic:classes=3,size=8,train=8,test=4"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint (beside the store) and a store of its penultimate and logits layers."""
    from lossxfer.extract import ExtractConfig, run_extract

    run = tmp_path_factory.mktemp("typos")
    train(TrainConfig(DATA, optim=OptimConfig(epochs=1), run=RunOptions(device="cpu")), run)
    out = run / "acts.h5"
    run_extract(
        ExtractConfig(
            checkpoint=str(run / "model.safetensors"),
            data=DATA,
            out=str(out),
            splits=("train", "test"),
            device="cpu",
        )
    )
    return out


def one_error_line(run) -> str:  # type: ignore[no-untyped-def]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossxfer: error: "), run.stderr
    assert "Traceback" not in run.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--data", "synthetic:clases=3"],
            "--data 'synthetic:clases=3': unknown synthetic parameter 'clases' (did you mean "
            "'classes'?); choose from: classes, size, channels, train, test, seed",
        ),
        (["--data", "synthetic:classes=3,classes=4"], "classes is given twice"),
        (["--data", "digits", "--classes", ""], "--classes '': no class given"),
        (["--data", "digits", "--classes", " "], "--classes ' ': no class given"),
        (
            ["--data", "digits", "--loss", "label_smoothing", "--loss-opt", "alpa=0.2"],
            "--loss-opt alpa: unknown label_smoothing option 'alpa' (did you mean 'alpha'?); "
            "choose from: alpha, rescale",
        ),
        (
            ["--data", "digits", "--loss", "cosine_softmax", "--loss-opt", "variant=relased"],
            "--loss-opt variant=relased: unknown cosine_softmax variant 'relased' (did you "
            "mean 'released'?); choose from: paper, released",
        ),
        (
            ["--data", "digits", "--loss-opt", "temperature=2", "--loss-opt", "temperature=3"],
            "--loss-opt temperature: given twice",
        ),
        (["--data", "digits", "--loss", "sofmax"], "(did you mean 'softmax'?)"),
    ],
)
def test_train_typos_exit_2_before_any_work(
    cli, tmp_path: Path, args: list[str], message: str
) -> None:  # type: ignore[no-untyped-def]
    run = cli("train", *args, "--epochs", 1, "--device", "cpu", "-o", tmp_path / "run")
    assert run.code == 2, run.stderr
    assert message in one_error_line(run)
    assert not (tmp_path / "run").exists()  # nothing started


def test_finetune_checks_its_options_too(cli, store: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt = store.parent / "model.safetensors"
    for args, message in [
        (["--data", "synthetic:clases=3"], "unknown synthetic parameter 'clases'"),
        (["--data", DATA, "--classes", ""], "--classes '': no class given"),
        (["--data", DATA, "--loss-opt", "temprature=2"], "(did you mean 'temperature'?)"),
    ]:
        run = cli("finetune", ckpt, *args, "--device", "cpu", "-o", tmp_path / "ft")
        assert run.code == 2 and message in one_error_line(run), run.stderr
        assert not (tmp_path / "ft").exists()


def test_a_wrong_layer_name_is_exit_2_with_did_you_mean_in_every_verb(  # type: ignore[no-untyped-def]
    cli, store: Path, tmp_path: Path
) -> None:
    ckpt = store.parent / "model.safetensors"
    quiet = ["-q"]  # so that the error is the only line, whatever progress a verb logs
    runs = {
        "extract": cli(
            "extract",
            ckpt,
            "--data",
            DATA,
            "--layers",
            "penultimat",
            "-o",
            tmp_path / "x.h5",
            "--device",
            "cpu",
            *quiet,
        ),
        "probe": cli("probe", store, "--layer", "penultimat", *quiet),
        "separation": cli("separation", store, "--layer", "penultimat", *quiet),
        "cka": cli("cka", store, "--layers", "penultimat", *quiet),
    }
    for verb, run in runs.items():
        assert run.code == 2, (verb, run.stderr)
        line = one_error_line(run)
        assert "unknown layer 'penultimat' (did you mean 'penultimate'?)" in line, (verb, line)
        assert "choose from:" in line and "logits" in line, (verb, line)
    assert not (tmp_path / "x.h5").exists()
