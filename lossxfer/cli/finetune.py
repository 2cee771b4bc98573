"""`lossxfer finetune`: a checkpoint's backbone, a new head, a lr × weight-decay grid."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lossxfer.cli.app import app
from lossxfer.cli.common import (
    DebugOpt,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    QuietOpt,
    SeedOpt,
    ThreadsOpt,
    cpu_threads_option,
    data_spec,
    parse_list,
    run_on_ranks,
)
from lossxfer.cli.completion import complete_path
from lossxfer.cli.train import (
    BatchOpt,
    ClassesOpt,
    DataOpt,
    DeterministicOpt,
    LabelMapOpt,
    LossOpt,
    LossOptsOpt,
    MomentumOpt,
    ResumeOpt,
    RunDirOpt,
    SplitSeedOpt,
    ValFractionOpt,
    WarmupOpt,
    WorkersOpt,
    render_accuracy,
)

if TYPE_CHECKING:
    from lossxfer.results import Result


def parse_floats(option: str, values: list[str] | None, default: str) -> tuple[float, ...]:
    from lossxfer.errors import UsageError

    try:
        return tuple(float(v) for v in parse_list(values or [default]))
    except ValueError:
        raise UsageError(f"{option} {','.join(values or [])!r}: expected numbers") from None


@app.command(
    epilog="Example: lossxfer finetune runs/cos/model.safetensors --data digits --classes 5-9 "
    "--lr 0.1,0.01 --weight-decay 0,1e-4 -o runs/cos-ft"
)
def finetune(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="Checkpoint to start from.", autocompletion=complete_path(".safetensors")
        ),
    ],
    data: DataOpt,
    out: RunDirOpt,
    classes: ClassesOpt = None,
    label_map: LabelMapOpt = None,
    loss: LossOpt = "softmax",
    loss_opt: LossOptsOpt = None,
    lr: Annotated[
        list[str] | None,
        typer.Option("--lr", help="Learning rates of the grid (default: 0.1,0.01,0.001)."),
    ] = None,
    weight_decay: Annotated[
        list[str] | None,
        typer.Option(
            "--weight-decay",
            help="Weight decays of the grid, on weights only, not BatchNorm parameters or "
            "biases (default: 0,1e-4).",
        ),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs per grid cell.", min=1)] = 10,
    steps: Annotated[
        int | None, typer.Option("--steps", help="Steps per grid cell (replaces --epochs).")
    ] = None,
    batch_size: BatchOpt = 128,
    momentum: MomentumOpt = 0.9,
    warmup_epochs: WarmupOpt = 0.0,
    val_fraction: ValFractionOpt = 0.2,
    split_seed: SplitSeedOpt = 0,
    refit: Annotated[
        bool, typer.Option("--refit/--no-refit", help="Retrain the best cell on train+val.")
    ] = True,
    freeze_backbone: Annotated[
        bool,
        typer.Option(
            "--freeze-backbone", help="Train the head only, backbone in eval mode (SGD probe)."
        ),
    ] = False,
    workers: WorkersOpt = 0,
    threads: ThreadsOpt = None,
    deterministic: DeterministicOpt = False,
    resume: ResumeOpt = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Fine-tune a checkpoint on new data: grid on validation, refit, test accuracy.

    Under torchrun: DistributedDataParallel, --batch-size per process, learning rates scaled
    by the world size; rank 0 writes and prints.
    """
    from lossxfer.classes import parse_classes
    from lossxfer.labelmap import canonical
    from lossxfer.objectives import make_objective, parse_loss_opts
    from lossxfer.rundir import finetune_dir
    from lossxfer.sniff import expect

    # Everything that can be checked without torch first, so a typo costs a fraction of a second
    ids = parse_classes(classes)
    loss_opts = parse_loss_opts(loss_opt)
    make_objective(loss, loss_opts)  # option typos: exit 2 before any data is loaded
    mapping = canonical(label_map)
    lrs = parse_floats("--lr", lr, "0.1,0.01,0.001")
    weight_decays = parse_floats("--weight-decay", weight_decay, "0,1e-4")
    expect(checkpoint, "checkpoint")
    spec = data_spec(data, check_folder=True)
    finetune_dir(out).start(resume, force)  # refuse a clobber before any import of torch
    from lossxfer.finetune import FinetuneConfig
    from lossxfer.finetune import finetune as run_finetune
    from lossxfer.loop import RunOptions

    config = FinetuneConfig(
        checkpoint=str(checkpoint),
        data=str(spec),
        classes=tuple(ids) if ids is not None else None,
        label_map=mapping,
        loss=loss,
        loss_opts=loss_opts,
        lrs=lrs,
        weight_decays=weight_decays,
        epochs=epochs,
        steps=steps,
        batch_size=batch_size,
        momentum=momentum,
        warmup_epochs=warmup_epochs,
        val_fraction=val_fraction,
        split_seed=split_seed,
        refit=refit,
        freeze_backbone=freeze_backbone,
        run=RunOptions(device, seed, deterministic, False, workers, cpu_threads_option(threads)),
    )
    config.check()
    run_on_ranks(
        device,
        (json_, quiet, debug),
        lambda progress, dist: run_finetune(
            config, out, resume=resume, force=force, progress=progress, dist=dist
        ),
        render_grid,
    )


def render_grid(result: "Result") -> Any:
    """The validation grid (the chosen cell marked) above the test accuracy."""
    from rich.console import Group
    from rich.table import Table

    grid = Table("lr", "weight decay", "val top-1", title="validation grid")
    chosen = result.metrics["chosen"]
    for cell in result.metrics["val_grid"]:
        score = "diverged" if cell["diverged"] else f"{100 * cell['val_top1']:.2f}%"
        mark = " ←" if (cell["lr"], cell["weight_decay"]) == tuple(chosen.values()) else ""
        grid.add_row(f"{cell['lr']:g}", f"{cell['weight_decay']:g}", score + mark)
    return Group(grid, render_accuracy(result))
