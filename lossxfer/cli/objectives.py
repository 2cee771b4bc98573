"""`lossxfer objectives`: the nine objectives, their options, defaults, formulas and references."""

from typing import Any

from lossxfer.cli.app import app
from lossxfer.cli.common import DebugOpt, JsonOpt, Output, QuietOpt

EPILOG = (
    "Example: lossxfer objectives --json. Options are set with `train --loss NAME --loss-opt "
    "KEY=VALUE` (repeatable). Without --lr, training uses 0.1 × batch/256 times the "
    "objective's lr scale. docs/method.md states each formula with its reference."
)


@app.command(epilog=EPILOG)
def objectives(json_: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False) -> None:
    """List the training objectives with their options, defaults, formulas and references."""
    from lossxfer.objectives import list_objectives

    with Output(json_, quiet, debug) as ui:
        infos = list_objectives()
        if json_:
            ui.emit_json([info._asdict() for info in infos])
            return
        from rich.table import Table
        from rich.text import Text

        table = Table("objective", "options (defaults)", "lr scale", "loss", "reference")
        for row in objective_rows():
            table.add_row(*map(Text, row))  # Text: formulas hold brackets, not markup
        ui.print(table)


def objective_rows() -> list[tuple[str, str, str, str, str]]:
    """(name, options, lr scale, formula, reference) per objective, for the table and docs."""
    from lossxfer.objectives import list_objectives

    return [
        (info.name, _options(info.options), f"{info.lr_scale:g}", info.doc, info.reference)
        for info in list_objectives()
    ]


def _options(options: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()
    )
