"""`lossxfer import`: a torchvision or timm model becomes an ordinary lossxfer checkpoint."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lossxfer.cli.app import app
from lossxfer.cli.common import DebugOpt, ForceOpt, JsonOpt, Output, QuietOpt
from lossxfer.cli.completion import complete_path

if TYPE_CHECKING:
    from lossxfer.results import Result

HELP = """\
Import a torchvision or timm model as a lossxfer checkpoint, so every verb works on it.

MODEL is SOURCE:NAME: timm:resnet50, timm:convnext_atto, timm:vit_tiny_patch16_224, \
torchvision:resnet18 (torchvision: the ResNet family). Weights come from a safetensors file or \
a Hugging Face model folder (model.safetensors + config.json); they must match the \
architecture exactly (else exit 3 naming the first missing and unexpected keys). Pickled \
files (.pth, .bin, .ckpt) are refused: lossxfer never unpickles. --download takes the \
published weights instead; it is the only use of the network. timm models need \
`pip install 'lossxfer[zoo]'` (exit 4 without it).

The checkpoint records the architecture, the class count (the classifier's rows), the input \
contract (size, mean/std, interpolation, crop: from timm's pretrained_cfg or torchvision's \
weight metadata, or the options below) and --objective, a label that groups the model with \
lossxfer runs in `report`. Named layers: stem, block1…blockN (every residual, ConvNeXt or \
transformer block), penultimate (pooled pre-logits; a ViT's class token), logits.
"""


@app.command(
    "import",
    help=HELP,
    epilog="Example: lossxfer import timm:resnet50 --weights r50-bce/model.safetensors "
    "--objective sigmoid --trained-on imagenet -o runs/r50-bce/model.safetensors",
)
def import_(
    model: Annotated[str, typer.Argument(help="SOURCE:NAME, e.g. timm:resnet50.")],
    out: Annotated[
        Path,
        typer.Option(
            "-o",
            "--out",
            metavar="FILE",
            help="Checkpoint to write (.safetensors).",
            dir_okay=False,
        ),
    ],
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights",
            metavar="PATH",
            help="Weights: a .safetensors file or a Hugging Face model folder.",
            autocompletion=complete_path(".safetensors"),
        ),
    ] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Fetch the published weights (network).")
    ] = False,
    objective: Annotated[
        str, typer.Option("--objective", help="The training objective, as a label.")
    ] = "unknown",
    trained_on: Annotated[
        str, typer.Option("--trained-on", help="Training data label for reports.")
    ] = "unknown",
    classes: Annotated[
        str | None, typer.Option("--classes", help="Source class ids of the outputs (0-999).")
    ] = None,
    size: Annotated[int | None, typer.Option("--size", help="Input size (pixels).")] = None,
    mean: Annotated[
        str | None, typer.Option("--mean", help="Per-channel mean, e.g. 0.5,0.5,0.5.")
    ] = None,
    std: Annotated[str | None, typer.Option("--std", help="Per-channel std.")] = None,
    interpolation: Annotated[
        str | None, typer.Option("--interpolation", help="bicubic, bilinear or nearest.")
    ] = None,
    crop: Annotated[
        float | None, typer.Option("--crop", help="Centre-crop fraction, e.g. 0.875.")
    ] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Import a torchvision or timm model as a lossxfer checkpoint."""
    from lossxfer.classes import parse_classes
    from lossxfer.fsio import check_output
    from lossxfer.importer import import_model

    check_output(out, force)
    with Output(json_, quiet, debug) as ui:
        result = import_model(
            model, weights, out, objective=objective, classes=parse_classes(classes),
            trained_on=trained_on, size=size, mean=_floats("--mean", mean),
            std=_floats("--std", std), interpolation=interpolation, crop=crop,
            download=download, force=force,
        )  # fmt: skip
        ui.emit(result, render=_summary)


def _floats(option: str, text: str | None) -> list[float] | None:
    from lossxfer.errors import UsageError

    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected comma-separated numbers") from None


def _summary(result: "Result") -> str:
    m = result.metrics
    spec = m["input"]
    return (
        f"{result.config['out']}: {result.config['model']}, {m['num_classes']} classes, "
        f"{m['parameters']:,} parameters, input {spec['size']} px ({spec['interpolation']}, "
        f"crop {spec['crop']:.3g}), objective {result.config['objective']}; layers "
        f"{m['layers'][0]}…{m['layers'][-1]} ({len(m['layers'])})"
    )
