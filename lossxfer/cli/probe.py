"""`lossxfer probe`: linear, ridge and kNN transfer probes of stored layers."""

from typing import TYPE_CHECKING, Annotated

import typer

from lossxfer.cli.app import app
from lossxfer.cli.common import (
    DebugOpt,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    LayerOpt,
    OutOpt,
    Output,
    QuietOpt,
    SeedOpt,
    StoreArg,
    parse_list,
)
from lossxfer.probe.methods import DEFAULT_METHODS, PROBES

if TYPE_CHECKING:
    from rich.table import Table

    from lossxfer.results import Result

HELP = """\
Linear, ridge and kNN transfer probes of stored layers (Kornblith et al. 2021, docs/method.md §4).

Protocol: fit on train, choose the hyperparameter on val (the store's val split, else a \
stratified --val-fraction held out of train with --seed), refit on train + val, report top-1 \
and mean per-class accuracy on test.

linear: multinomial logistic regression minimising mean CE + λ/2‖W‖²_F (bias not penalised; \
scikit-learn's C = 1/(λn)) by full-batch L-BFGS with strong-Wolfe line search, float64 on the \
CPU and float32 on a GPU, to max|∇| ≤ --tol; λ from --grid log-spaced values over \
--grid-range, swept strong to weak with warm starts. \
ridge: one-vs-all ridge on one-hot targets, mean squared error + λ‖W‖²_F, the whole grid from \
one eigendecomposition (a fast screen). \
knn: cosine similarity, k in {1, 5, 10, 20, 50, 100, 200} and a temperature-weighted \
(T = 0.07) or majority vote chosen on val. \
Ties on val go to the strongest regularisation (largest λ; weighted vote, then larger k).

Defaults: layer `penultimate` (else the store's last layer); methods linear and knn (the \
paper's two fixed-feature probes).
"""


@app.command(
    help=HELP,
    epilog="Example: lossxfer probe acts.h5 --layer penultimate --method linear --method knn "
    "-o probe.json",
)
def probe(
    store: StoreArg,
    layer: LayerOpt = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            help=f"{', '.join(PROBES.names())} or all: repeat or comma-separate "
            f"(default: {','.join(DEFAULT_METHODS)}).",
        ),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            help="paper: 45 λ values, float64 (the default); fast: 12 values over the same "
            "range, linear fits iterated in float32 and polished in float64 to --tol.",
        ),
    ] = "paper",
    grid: Annotated[
        int | None,
        typer.Option("--grid", help="Number of λ values (linear, ridge; default: the preset's)."),
    ] = None,
    grid_range: Annotated[
        str, typer.Option("--grid-range", help="LO,HI: the λ grid's end points.")
    ] = "1e-6,1e5",
    tol: Annotated[
        float, typer.Option("--tol", help="linear: stop when max|gradient| ≤ this.")
    ] = 1e-6,
    max_iter: Annotated[
        int, typer.Option("--max-iter", help="linear: L-BFGS iterations per λ at most.")
    ] = 1000,
    standardize: Annotated[
        bool,
        typer.Option("--standardize", help="linear, ridge: z-score features on the fit rows."),
    ] = False,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Held out of train if there is no val split.")
    ] = 0.2,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    out: OutOpt = None,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Linear, ridge and kNN transfer probes of stored layers."""
    from lossxfer.errors import UsageError
    from lossxfer.fsio import check_output
    from lossxfer.probe.methods import PRESETS
    from lossxfer.sniff import expect

    if out:
        check_output(out, force)
    expect(store, "store")
    chosen = PRESETS[preset]  # validated while parsing (cli/completion.py)
    try:
        lo, hi = (float(v) for v in grid_range.split(","))
    except ValueError:
        raise UsageError(f"--grid-range {grid_range!r}: expected LO,HI like 1e-6,1e5") from None
    from lossxfer.probe.run import ProbeConfig, run_probe

    config = ProbeConfig(
        store=str(store),
        layers=tuple(parse_list(layer)),
        methods=tuple(parse_list(method)) or DEFAULT_METHODS,
        grid=chosen.grid if grid is None else grid,
        grid_range=(lo, hi),
        tol=tol,
        max_iter=max_iter,
        standardize=standardize,
        mixed=chosen.mixed,
        val_fraction=val_fraction,
        seed=seed,
        device=device,
    )
    with Output(json_, quiet, debug) as ui:
        result = run_probe(config, progress=ui.progress)
        if out:
            result.write(out, force)
        ui.emit(result, render=_table)


def _table(result: "Result") -> "Table":
    from rich.box import SIMPLE_HEAD
    from rich.table import Table

    rows = result.metrics["rows"]
    title = (
        f"probes (fit {rows['fit']}, val {rows['val']} {result.metrics['val_source']}, "
        f"test {rows['test']}; --json for curves)"
    )
    table = Table(title=title, box=SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("layer", no_wrap=True)
    table.add_column("method", no_wrap=True)
    for name in ("test top-1", "per-class", "val top-1", "chosen", "s"):
        table.add_column(name, justify="right", no_wrap=True)
    seconds = result.timing["seconds"]
    for layer, methods in result.metrics["layers"].items():
        for name, m in methods.items():
            chosen = f"λ={m['chosen']:.3g}" if name != "knn" else f"k={m['chosen']} {m['vote']}"
            table.add_row(
                layer,
                name,
                f"{m['test_top1']:.4f}",
                f"{m['test_mean_per_class']:.4f}",
                f"{m['val_top1']:.4f}",
                chosen,
                f"{seconds[layer][name]:.1f}",
            )
    return table
