"""`lossxfer store merge`: join the shards of `extract --shard i/N` into one store."""

from pathlib import Path
from typing import Annotated

import typer

from lossxfer.cli.app import app
from lossxfer.cli.common import DebugOpt, ForceOpt, JsonOpt, Output, QuietOpt
from lossxfer.cli.completion import complete_path

store_app = typer.Typer(help="Work with activation stores.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command(
    epilog="Example: lossxfer store merge part-*.h5 -o acts.h5 (shards in any order; all N of "
    "them, from one extraction, are required)"
)
def merge(
    shards: Annotated[
        list[Path],
        typer.Argument(
            help="Shard stores (.h5) of one extraction.", autocompletion=complete_path(".h5")
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("-o", "--out", metavar="FILE", help="Merged store to write.", dir_okay=False),
    ],
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Concatenate extraction shards in index order into one activation store."""
    from lossxfer.extract import merge_shards
    from lossxfer.fsio import check_output
    from lossxfer.sniff import expect

    check_output(out, force)
    for shard in shards:
        expect(shard, "store")
    with Output(json_, quiet, debug) as ui:
        result = merge_shards([str(s) for s in shards], str(out), force, progress=ui.progress)
        rows = ", ".join(f"{s} {n}" for s, n in result.metrics["splits"].items())
        ui.emit(result, render=lambda r: f"{out}: {r.metrics['shards']} shards merged; {rows} rows")
