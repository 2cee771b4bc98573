"""`lossxfer info`: what a lossxfer file is and what its metadata says."""

from pathlib import Path
from typing import Annotated

import typer

from lossxfer.cli.app import app
from lossxfer.cli.common import DebugOpt, JsonOpt, Output, QuietOpt
from lossxfer.cli.completion import complete_path


@app.command(
    epilog="Example: lossxfer info runs/softmax-s0/model.safetensors runs/softmax-s0/source.h5. "
    "With --json, stdout is one JSON list holding an object per file, in the order given. "
    "A file that is not a valid lossxfer file stops with exit 3 naming it."
)
def info(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Checkpoints (.safetensors), activation stores (.h5) or result records (.json); "
            "the kind is told by content, not by extension.",
            autocompletion=complete_path(".safetensors", ".h5", ".json"),
        ),
    ],
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show the kind, format version and metadata of lossxfer files."""
    from lossxfer.info import describe, rows

    with Output(json_, quiet, debug) as ui:
        described = [describe(path) for path in files]
        if json_:
            ui.emit_json(described)
            return
        from rich.table import Table

        for item in described:
            table = Table(title=f"{item['path']} ({item['kind']})", show_header=False)
            table.add_column(style="bold")
            table.add_column(overflow="fold")
            for key, text in rows({k: v for k, v in item.items() if k not in ("path", "kind")}):
                table.add_row(key, text)
            ui.print(table)
