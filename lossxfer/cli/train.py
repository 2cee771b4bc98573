"""`lossxfer train`: train a network with one objective and write a run directory."""

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
    run_on_ranks,
)

if TYPE_CHECKING:
    from lossxfer.results import Result


RunDirOpt = Annotated[
    Path,
    typer.Option(
        "-o",
        "--out",
        metavar="DIR",
        help="Run directory (created): model.safetensors, the result record, training state.",
        file_okay=False,
    ),
]
DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="Data spec: digits, synthetic, cifar10:ROOT, imagefolder:PATH, …",
    ),
]
ClassesOpt = Annotated[
    str | None, typer.Option("--classes", help="Class subset, e.g. 0-4,7 (default: all).")
]
LabelMapOpt = Annotated[
    str | None,
    typer.Option(
        "--label-map",
        help="Superclass labels: '0,6:0;1,7:1;…' (classes:superclass) or a .json/.csv file of "
        "class → superclass; every chosen class must be mapped.",
    ),
]
LossOpt = Annotated[
    str,
    typer.Option(
        "--loss",
        help="Objective, e.g. softmax, label_smoothing, cosine_softmax, squared_error.",
    ),
]
LossOptsOpt = Annotated[
    list[str] | None,
    typer.Option("--loss-opt", help="Objective option k=v (repeatable), e.g. alpha=0.2."),
]
ValFractionOpt = Annotated[
    float, typer.Option("--val-fraction", help="Fraction of train held out for validation.")
]
SplitSeedOpt = Annotated[int, typer.Option("--split-seed", help="Seed of the validation split.")]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", help="Batch size (per process under torchrun).", min=1)
]
MomentumOpt = Annotated[float, typer.Option("--momentum", help="SGD momentum.", min=0, max=1)]
NesterovOpt = Annotated[bool, typer.Option("--nesterov/--no-nesterov", help="Nesterov momentum.")]
WarmupOpt = Annotated[
    float,
    typer.Option("--warmup-epochs", help="Linear warm-up length, then cosine decay.", min=0),
]
WorkersOpt = Annotated[
    int, typer.Option("--workers", help="DataLoader workers (in-memory data needs none).")
]
DeterministicOpt = Annotated[
    bool, typer.Option("--deterministic", help="Deterministic kernels: same seed, same weights.")
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Finish the run in OUT: continue from its saved state, start when there is none, "
        "do nothing when it is complete (same options). Rerun until done.",
    ),
]


@app.command(
    epilog="Example: lossxfer train --data digits --loss cosine_softmax --loss-opt tau=0.05 "
    "-o runs/cos"
)
def train(
    data: DataOpt,
    out: RunDirOpt,
    arch: Annotated[
        str, typer.Option("--arch", help="Architecture: smallcnn, resnet18 or resnet50.")
    ] = "smallcnn",
    loss: LossOpt = "softmax",
    loss_opt: LossOptsOpt = None,
    classes: ClassesOpt = None,
    label_map: LabelMapOpt = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.", min=1)] = 10,
    batch_size: BatchOpt = 32,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="Peak learning rate (default: 0.1 × batch/256 × the objective's lr scale; "
            "`lossxfer objectives` lists the scales).",
            min=0,
        ),
    ] = None,
    momentum: MomentumOpt = 0.9,
    nesterov: NesterovOpt = True,
    weight_decay: Annotated[
        float,
        typer.Option(
            "--weight-decay",
            help="L2 on weights only, not BatchNorm parameters or biases (paper: 8e-5).",
            min=0,
        ),
    ] = 8e-5,
    warmup_epochs: WarmupOpt = 1.0,
    ema: Annotated[
        float,
        typer.Option(
            "--ema", help="Evaluate an EMA of the weights with this decay (0: off).", min=0, max=1
        ),
    ] = 0.0,
    val_fraction: ValFractionOpt = 0.1,
    split_seed: SplitSeedOpt = 0,
    workers: WorkersOpt = 0,
    threads: ThreadsOpt = None,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the network.")] = False,
    deterministic: DeterministicOpt = False,
    resume: ResumeOpt = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train a network with one objective; SIGTERM/SIGUSR1 save state for --resume.

    Under torchrun: DistributedDataParallel (nccl on GPUs, gloo on the CPU), --batch-size per
    process, learning rate scaled by the world size; rank 0 writes and prints.
    """
    from lossxfer.classes import parse_classes
    from lossxfer.labelmap import canonical
    from lossxfer.objectives import make_objective, parse_loss_opts
    from lossxfer.rundir import train_dir

    # Everything that can be checked without torch first, so a typo costs a fraction of a second
    ids = parse_classes(classes)
    loss_opts = parse_loss_opts(loss_opt)
    make_objective(loss, loss_opts)  # option typos: exit 2 before any data is loaded
    mapping = canonical(label_map)
    spec = data_spec(data, check_folder=True)
    train_dir(out).start(resume, force)  # refuse a clobber before any import of torch
    from lossxfer.train import OptimConfig, RunOptions, TrainConfig
    from lossxfer.train import train as run_train

    config = TrainConfig(
        data=str(spec),
        arch=arch,
        loss=loss,
        loss_opts=loss_opts,
        classes=tuple(ids) if ids is not None else None,
        label_map=mapping,
        val_fraction=val_fraction,
        split_seed=split_seed,
        optim=OptimConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            warmup_epochs=warmup_epochs,
            ema=ema,
        ),
        run=RunOptions(device, seed, deterministic, compile_, workers, cpu_threads_option(threads)),
    )
    config.optim.check()
    run_on_ranks(
        device,
        (json_, quiet, debug),
        lambda progress, dist: run_train(
            config, out, resume=resume, force=force, progress=progress, dist=dist
        ),
        render_accuracy,
    )


def render_accuracy(result: "Result") -> Any:
    """A small table of the accuracies in a train or finetune record."""
    from rich.table import Table

    table = Table("metric", "value", title=f"{result.kind}: {result.dataset.get('label', '')}")
    for key, value in result.metrics.items():
        if key.endswith(("_top1", "_top5")) and value is not None:
            table.add_row(key, f"{100 * value:.2f}%")
    table.add_row("wall time", f"{result.timing.get('wall_s', 0):.1f} s")
    return table
