"""`lossxfer extract`: a checkpoint's activations on a dataset, streamed to an HDF5 store."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lossxfer.cli.app import app
from lossxfer.cli.common import (
    DebugOpt,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    Output,
    QuietOpt,
    ThreadsOpt,
    cpu_threads_option,
    parse_list,
)
from lossxfer.cli.completion import complete_path
from lossxfer.cli.train import LabelMapOpt

if TYPE_CHECKING:
    from lossxfer.results import Result

HELP = """\
Extract activations of a checkpoint on a dataset into an HDF5 activation store.

The model is rebuilt from the checkpoint alone and run in eval mode without autograd; images \
get the evaluation transform with the checkpoint's input size and normalisation. Layers: \
`penultimate` and `logits` by default, any of `stem`, `block1`…`blockN`, or `all`; spatial maps \
are averaged over space (--pool avg) or flattened. Without --classes, the checkpoint's own \
classes are extracted when --data is its training data, else every class. Labels are those \
classes, never the checkpoint's superclasses: a store of a model trained with --label-map is \
labelled with the fine classes (coarse-to-fine transfer) unless --label-map is given here too.

Splits default to train and test. `val` is held out from train: --val-fraction defaults to \
0.1 when val is extracted (as in training) and to 0 otherwise, so train is then the whole \
training split. --shard i/N (0 ≤ i < N) extracts the i-th of N contiguous row ranges of every \
split; `lossxfer store merge` joins the shards into one store.
"""


@app.command(
    help=HELP,
    epilog="Example: lossxfer extract run/model.safetensors --data digits --classes 5-9 "
    "--layers all -o run/transfer.h5",
)
def extract(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="Checkpoint (.safetensors).", autocompletion=complete_path(".safetensors")
        ),
    ],
    data: Annotated[str, typer.Option("--data", help="Data spec, e.g. digits, cifar10:ROOT.")],
    out: Annotated[
        Path,
        typer.Option("-o", "--out", metavar="FILE", help="Store to write (.h5).", dir_okay=False),
    ],
    split: Annotated[
        list[str] | None, typer.Option("--split", help="train, val, test; repeatable.")
    ] = None,
    layers: Annotated[
        list[str] | None, typer.Option("--layers", help="Comma-separated names or `all`.")
    ] = None,
    pool: Annotated[str, typer.Option("--pool", help="avg or flatten (spatial maps).")] = "avg",
    dtype: Annotated[str, typer.Option("--dtype", help="float32 or float16.")] = "float32",
    compression: Annotated[str | None, typer.Option("--compression", help="lzf or gzip.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 256,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Only the first N rows of each split.")
    ] = None,
    classes: Annotated[
        str | None, typer.Option("--classes", help="Class ids, e.g. 5-9 or 0,2,4.")
    ] = None,
    label_map: LabelMapOpt = None,
    val_fraction: Annotated[
        float | None, typer.Option("--val-fraction", help="Held out from train as val.")
    ] = None,
    split_seed: Annotated[int, typer.Option("--split-seed", help="Seed of the val hold-out.")] = 0,
    download: Annotated[bool, typer.Option("--download", help="Fetch a missing dataset.")] = False,
    threads: ThreadsOpt = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Loader processes (file datasets).")
    ] = 4,
    shard: Annotated[
        str | None, typer.Option("--shard", help="i/N: this job's share of the rows.")
    ] = None,
    device: DeviceOpt = "auto",
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Extract activations of a checkpoint on a dataset into an HDF5 store."""
    from lossxfer.classes import parse_classes
    from lossxfer.cli.common import data_spec
    from lossxfer.extract import ExtractConfig, run_extract
    from lossxfer.fsio import check_output
    from lossxfer.labelmap import canonical
    from lossxfer.shards import parse_shard
    from lossxfer.sniff import expect

    check_output(out, force)
    expect(checkpoint, "checkpoint")
    parse_shard(shard)
    chosen = parse_classes(classes)
    config = ExtractConfig(
        checkpoint=str(checkpoint), data=str(data_spec(data)), out=str(out),
        splits=tuple(parse_list(split) or ("train", "test")),
        layers=tuple(parse_list(layers) or ("penultimate", "logits")),
        pool=pool, dtype=dtype, compression=compression, batch_size=batch_size, limit=limit,
        classes=tuple(chosen) if chosen is not None else None, label_map=canonical(label_map),
        val_fraction=val_fraction,
        split_seed=split_seed, download=download, device=device,
        threads=cpu_threads_option(threads), workers=workers, shard=shard, force=force,
    )  # fmt: skip
    with Output(json_, quiet, debug) as ui:
        ui.emit(run_extract(config, progress=ui.progress), render=_summary)


def _summary(result: "Result") -> str:
    m, t = result.metrics, result.timing
    rows = ", ".join(f"{s} {n}" for s, n in m["splits"].items())
    layers = ", ".join(f"{k} ({d})" for k, d in m["layers"].items())
    same = "".join(
        f"; {a} and {b} are the same activations ({b} is the pooled {a}; report shows it once)"
        for a, b in m.get("same_layers", {}).items()
    )
    return (
        f"{result.config['out']}: {rows} rows; layers {layers}{same}; {t['rows_per_s']:.0f} rows/s"
    )
