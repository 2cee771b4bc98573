"""`lossxfer cka`: layer × layer CKA between activation stores; shards and their merge."""

from pathlib import Path
from typing import Annotated

import typer

from lossxfer.cli.app import app
from lossxfer.cli.common import (
    DebugOpt,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    OutOpt,
    Output,
    QuietOpt,
    SeedOpt,
    parse_list,
)
from lossxfer.cli.completion import complete_path

_LAYERS = "Layers of store A: repeat or comma-separate; `all` (default) for every stored layer."


def _estimators_help() -> str:
    """One clause per registered estimator (the registry is light: no numpy at import)."""
    from lossxfer.similarity.registry import ESTIMATORS

    return "; ".join(f"{name}: {ESTIMATORS.get(name).summary}" for name in ESTIMATORS) + "."


@app.command(
    epilog="Example: lossxfer cka softmax.h5 cosine.h5 --estimator debiased -o cka.json "
    "--plot cka.png   ·   SLURM: lossxfer cka a.h5 --shard $SLURM_ARRAY_TASK_ID/8 -o part$ID.h5; "
    "then lossxfer cka --merge part*.h5 -o cka.json"
)
def cka(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Store A and optionally store B (.h5); with --merge, the shard files.",
            autocompletion=complete_path(".h5", ".json"),
        ),
    ],
    split: Annotated[str, typer.Option("--split", help="Store split to read.")] = "test",
    layers: Annotated[
        list[str] | None,
        typer.Option("--layers", "--layer", help=_LAYERS),
    ] = None,
    layers_b: Annotated[
        list[str] | None,
        typer.Option(
            "--layers-b",
            help="Layers of store B (default: as --layers).",
        ),
    ] = None,
    estimator: Annotated[
        str,
        typer.Option(
            "--estimator",
            help=_estimators_help(),
        ),
    ] = "linear",
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="exact (float64 throughout) or mixed (linear, debiased: float32 products of "
            "shifted row blocks summed in float64; |ΔCKA| ≲ 1e-6, ~1.6× faster on a CPU).",
        ),
    ] = "exact",
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="minibatch: rows per batch.")
    ] = 256,
    passes: Annotated[int, typer.Option("--passes", help="minibatch: shuffled passes.")] = 1,
    threshold: Annotated[
        float, typer.Option("--threshold", help="rbf: bandwidth = threshold × median distance.")
    ] = 0.5,
    max_n: Annotated[int, typer.Option("--max-n", help="rbf: refuse more rows than this.")] = 5000,
    backend: Annotated[
        str, typer.Option("--backend", help="auto (CuPy/CUDA if present), numpy, torch or cupy.")
    ] = "auto",
    block_rows: Annotated[
        int, typer.Option("--block-rows", help="Rows read per block (0: from the widths).")
    ] = 0,
    shard: Annotated[
        str | None,
        typer.Option("--shard", help="i/N (0 ≤ i < N): write part i's accumulators to -o."),
    ] = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="Inputs are shard files: sum them and finish.")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", metavar="FILE", help="Also draw the matrix as a heatmap (.png)."),
    ] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    out: OutOpt = None,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Centered kernel alignment between the layers of one or two activation stores."""
    from lossxfer.errors import UsageError
    from lossxfer.fsio import check_output
    from lossxfer.shards import parse_shard
    from lossxfer.sniff import expect

    if merge and shard:
        raise UsageError("--merge and --shard exclude each other")
    if not merge and len(inputs) > 2:
        raise UsageError(f"expected one or two stores, got {len(inputs)} (shards need --merge)")
    if shard and (out is None or plot is not None):
        raise UsageError("--shard writes the part's accumulators to -o PART.h5 (no --plot)")
    for path in (out, plot):
        if path is not None:
            check_output(path, force)
    if plot is not None:  # matplotlib refuses other suffixes, but only after all the work
        from matplotlib.figure import Figure

        kinds = Figure().canvas.get_supported_filetypes()
        if plot.suffix.lower().lstrip(".") not in kinds:
            raise UsageError(f"--plot {plot}: use a suffix of {', '.join(sorted(kinds))}")
    for path in inputs:  # shard parts are HDF5 or JSON (-o part.json): merge_shards checks them
        expect(path, *(("store", "result") if merge else ("store",)))
    from lossxfer.similarity import CkaConfig, compute_shard, merge_shards, run_cka, write_shard
    from lossxfer.similarity.plot import plot_heatmap
    from lossxfer.similarity.result import CkaResult

    config = CkaConfig(
        store_a=str(inputs[0]),
        store_b=str(inputs[1]) if len(inputs) > 1 and not merge else None,
        split=split,
        layers_a=tuple(parse_list(layers)),
        layers_b=tuple(parse_list(layers_b)),
        estimator=estimator,
        precision=precision,
        batch_size=batch_size,
        passes=passes,
        threshold=threshold,
        max_n=max_n,
        backend=backend,
        device=device,
        seed=seed,
        block_rows=block_rows,
        shard=parse_shard(shard),
    )
    with Output(json_, quiet, debug) as ui:
        if shard and out is not None:
            part = compute_shard(config, ui.progress)
            write_shard(part, out, force)
            summary = {k: part.meta[k] for k in ("shard", "parts", "unit", "lo", "hi", "total")}
            if json_:
                ui.emit_json({"path": str(out), **summary})
            else:
                ui.print(
                    f"{out}: part {summary['shard']}/{summary['parts']}, "
                    f"{summary['unit']} [{summary['lo']}, {summary['hi']}) of {summary['total']}"
                )
            return
        result = merge_shards(inputs, ui.progress) if merge else run_cka(config, ui.progress)
        if out is not None:
            result.write(out, force)
        if plot is not None:
            plot_heatmap(result, plot, force)
        ui.emit(result, render=lambda r: CkaResult.from_dict(r.metrics))
