"""`lossxfer report`: paper-style tables and plots from result records."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from lossxfer.cli.app import app
from lossxfer.cli.common import (
    DebugOpt,
    ForceOpt,
    JsonOpt,
    Output,
    QuietOpt,
    parse_list,
)
from lossxfer.cli.completion import complete_path


def _table_help() -> str:
    from lossxfer.report.tables import TABLES, table_help

    tables = " ".join(f"{name}: {table_help(name)}." for name in TABLES)
    return (
        "Tables to show, comma-separated, or all (the default: every table the records allow). "
        + tables
    )


def _format_help() -> str:
    from lossxfer.report.formats import FORMATS

    formats = ", ".join(
        f"{name} ({fmt.suffix})" if (fmt := FORMATS.get(name)).suffix else name for name in FORMATS
    )
    return (
        f"Output format: {formats}. Default: from the -o suffix in brackets, else rich. "
        "--json is --format json."
    )


def _complete_table(incomplete: str) -> list[str]:
    from lossxfer.report.tables import TABLES

    return [n for n in [*TABLES.names(), "all"] if n.startswith(incomplete)]


def _complete_format(incomplete: str) -> list[str]:
    from lossxfer.report.formats import FORMATS

    return [n for n in FORMATS.names() if n.startswith(incomplete)]


def _found(ctx: typer.Context) -> tuple[list[str], list[str]]:
    """Row labels and layers of the records under the paths given earlier on the line."""
    from lossxfer.report.records import survey

    words: list[object] = list(ctx.args)
    value = ctx.params.get("paths")
    words += value if isinstance(value, (list, tuple)) else [value] if value else []
    paths = [Path(str(w)) for w in words if Path(str(w)).exists()]
    return survey(paths) if paths else ([], [])


def _complete_baseline(ctx: typer.Context, incomplete: str) -> list[str]:
    return [n for n in _found(ctx)[0] if n.startswith(incomplete)]


def _complete_layer(ctx: typer.Context, incomplete: str) -> list[str]:
    return [n for n in _found(ctx)[1] if n.startswith(incomplete)]


@app.command(
    epilog="Example: lossxfer report runs/ --table summary --format latex -o table.tex "
    "--plots figs/",
)
def report(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Result records (.json) or directories searched recursively. Runs that differ in "
            "architecture or training data form separate groups; unusable records are listed on "
            "stderr with the reason (exit 3 when none is usable).",
            autocompletion=complete_path(".json"),
        ),
    ],
    table: Annotated[
        str, typer.Option("--table", help=_table_help(), autocompletion=_complete_table)
    ] = "all",
    format_: Annotated[
        str | None,
        typer.Option("--format", help=_format_help(), autocompletion=_complete_format),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Row the t-test compares against, as labelled: e.g. softmax or "
            "'softmax (temperature=0.5)'; it must be among the records. Default: softmax where "
            "there is a softmax row, else no test.",
            autocompletion=_complete_baseline,
            show_default=False,
        ),
    ] = None,
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            help="Layer for probe, separation and CKA numbers; it must be among the records. "
            "Default: penultimate (records without it are skipped, with the reason).",
            autocompletion=_complete_layer,
            show_default=False,
        ),
    ] = None,
    cka_estimator: Annotated[
        str | None,
        typer.Option(
            "--cka-estimator",
            help="Use CKA records of this estimator (default: linear if present, else the "
            "only one).",
        ),
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            "--plots",
            metavar="DIR",
            help="Write the figures (PNG, SVG and PDF, one column wide) into this folder.",
            file_okay=False,
        ),
    ] = None,
    caption: Annotated[
        str | None,
        typer.Option(
            "--caption",
            help="LaTeX: the caption's first sentence, instead of the table's title (the "
            "statistics follow it); with several tables it leads each title.",
        ),
    ] = None,
    label: Annotated[
        str | None,
        typer.Option(
            "--label",
            help="LaTeX: the \\label (default tab:TABLE); with several tables, LABEL-TABLE.",
        ),
    ] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            metavar="PATH",
            help="Write the tables here, not to stdout: a file (its suffix implies --format), "
            "or a folder (an existing one, or a name without suffix) for one file per table, "
            "named after it (csv unless --format says otherwise). CSV and TSV hold one table: "
            "with several, -o name.csv writes name-TABLE.csv for each. -o -: stdout.",
        ),
    ] = None,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Paper-style tables (mean ± std over seeds, best bold, † t-test vs baseline) and plots."""
    from lossxfer.errors import InputError, UsageError
    from lossxfer.fsio import check_output, write_text_atomic
    from lossxfer.registry import check_choice
    from lossxfer.report import (
        FORMATS,
        TABLES,
        NothingToReport,
        ReportConfig,
        destinations,
        format_for,
        render,
        rich_tables,
        run_report,
    )

    if json_ and format_ not in (None, "json"):
        raise UsageError(f"--json conflicts with --format {format_}")
    out = None if out == Path("-") else out  # -o -: stdout, as without -o
    fmt = check_choice("report format", "json" if json_ else format_ or format_for(out), FORMATS)
    tables = [check_choice("table", t, [*TABLES.names(), "all"]) for t in parse_list([table])]
    wanted = TABLES.names() if "all" in tables else tables
    for path, _ in destinations(fmt, out, wanted) if out else []:
        if path is not None:  # each file that may be written: refused now, not after the work
            check_output(path, force)
    config = ReportConfig(
        paths=tuple(paths),
        tables=None if "all" in tables else tuple(tables),
        baseline=baseline,
        layer=layer,
        cka_estimator=cka_estimator,
        plots=plots,
        force=force,
        caption=caption,
        label=label,
    )
    with Output(fmt == "json", quiet, debug):
        try:
            result = run_report(config)
        except NothingToReport as exc:
            if len(paths) == 1 and len(exc.skipped) <= 1:  # one line naming file and problem
                only = exc.skipped[0] if exc.skipped else None
                text = f"{only.path}: {only.reason}" if only else f"{paths[0]}: {exc}"
                raise InputError(text) from None
            _tell(quiet, [f"skipped {s.path}: {s.reason}" for s in exc.skipped])
            raise
        _tell(quiet, [f"skipped {s.path}: {s.reason}" for s in result.skipped])
        _tell(quiet, [f"warning: {w}" for w in result.warnings])
        written = []
        for path, names in destinations(fmt, out, [t.name for t in result.tables]):
            if path is not None:
                written.append(write_text_atomic(path, render(result, fmt, names), force))
            elif fmt == "rich" and sys.stdout.isatty():  # bold needs a terminal
                from lossxfer.cli.common import stdout_console

                stdout_console().print(rich_tables(result.tables))
            else:
                sys.stdout.write(render(result, fmt, names))
        _tell(quiet, [f"wrote {p}" for p in [*result.plots, *written]])


def _tell(quiet: bool, lines: list[str]) -> None:
    if not quiet:
        for line in lines:
            sys.stderr.write(f"lossxfer: {line}\n")
