"""`lossxfer separation`: class separation R² and representation statistics of a store."""

from typing import TYPE_CHECKING, Annotated

import typer

from lossxfer.cli.app import app
from lossxfer.cli.common import (
    DebugOpt,
    ForceOpt,
    JsonOpt,
    LayerOpt,
    OutOpt,
    Output,
    QuietOpt,
    SplitOpt,
    StoreArg,
    parse_list,
)

if TYPE_CHECKING:
    from rich.table import Table

    from lossxfer.results import Result

HELP = """\
Class separation R² and representation statistics of stored layers (one streamed pass).

On L2-normalised rows x̂ with μ_k the mean of x̂ over class k (K classes weighted equally, \
self-pairs included; Kornblith et al. 2021, docs/method.md §6): \
d̄_within = 1 − (1/K)Σ‖μ_k‖², d̄_total = 1 − ‖(1/K)Σμ_k‖², R² = 1 − d̄_within/d̄_total. \
Rows of all zeros have no direction: they are counted and left out of R², with a warning.

On the raw rows: sparsity = mean over rows of the fraction of exact zeros; dead units = units \
zero on every row; effective dim = participation ratio (Σλ)²/Σλ² of the covariance spectrum; \
NC1 = tr(Σ_W Σ_B⁺)/K with Σ_W the pooled within-class covariance and Σ_B the covariance of \
the class means. Effective dim and NC1 accumulate a D×D matrix: they are skipped for layers \
wider than --max-cov-dim.

Defaults: layer `penultimate` (else the store's last layer); split `test` if extracted, else \
`train` (the paper measures separation on the source data).
"""


@app.command(
    help=HELP,
    epilog="Example: lossxfer separation acts.h5 --layer penultimate -o sep.json",
)
def separation(
    store: StoreArg,
    layer: LayerOpt = None,
    split: SplitOpt = None,
    block_rows: Annotated[
        int, typer.Option("--block-rows", help="Rows read per block (memory, not results).")
    ] = 4096,
    max_cov_dim: Annotated[
        int,
        typer.Option(
            "--max-cov-dim", help="Widest layer for effective dim and NC1 (D×D float64 memory)."
        ),
    ] = 4096,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    out: OutOpt = None,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Class separation R² and representation statistics of stored layers."""
    from lossxfer.fsio import check_output
    from lossxfer.sniff import expect

    if out:
        check_output(out, force)
    expect(store, "store")
    from lossxfer.separation import SeparationConfig, run_separation

    config = SeparationConfig(
        store=str(store),
        layers=tuple(parse_list(layer)),
        split=split,
        block_rows=block_rows,
        max_cov_dim=max_cov_dim,
    )
    with Output(json_, quiet, debug) as ui:
        result = run_separation(config, progress=ui.progress)
        if out:
            result.write(out, force)
        ui.emit(result, render=_table)


def _table(result: "Result") -> "Table":
    from rich.box import SIMPLE_HEAD
    from rich.table import Table

    title = f"class separation ({result.metrics['split']} split; --json for all numbers)"
    table = Table(title=title, box=SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("layer", no_wrap=True)
    for name in ("dim", "R²", "d̄ within", "sparsity", "dead", "eff.dim", "NC1", "0-rows"):
        table.add_column(name, justify="right", no_wrap=True)
    for layer, m in result.metrics["layers"].items():
        cells = [m["r2"], m["d_within"], m["sparsity"]]
        table.add_row(
            layer,
            str(m["dim"]),
            *(_num(v) for v in cells),
            str(m["dead_units"]),
            _num(m["effective_dim"], ".1f"),
            _num(m["nc1"], ".3g"),
            str(m["zero_rows"]),
        )
    return table


def _num(value: float | None, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)
