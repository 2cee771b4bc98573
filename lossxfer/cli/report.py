"""`lossxfer report`: paper-style tables and plots from result records."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lossxfer.cli.app import app
from lossxfer.cli.common import (
    DebugOpt,
    ForceOpt,
    JsonOpt,
    OutOpt,
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
        str,
        typer.Option(
            "--baseline",
            help="Row the t-test compares against, as labelled: softmax, or e.g. "
            "'softmax (temperature=0.5)'.",
        ),
    ] = "softmax",
    layer: Annotated[
        str, typer.Option("--layer", help="Layer for probe, separation and CKA numbers.")
    ] = "penultimate",
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
            "--plots", help="Write figures (PNG and SVG) into this folder.", file_okay=False
        ),
    ] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    out: OutOpt = None,
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
        format_for,
        render,
        run_report,
    )

    if json_ and format_ not in (None, "json"):
        raise UsageError(f"--json conflicts with --format {format_}")
    fmt = check_choice("report format", "json" if json_ else format_ or format_for(out), FORMATS)
    tables = [check_choice("table", t, [*TABLES.names(), "all"]) for t in parse_list([table])]
    config = ReportConfig(
        paths=tuple(paths),
        tables=None if "all" in tables else tuple(tables),
        baseline=baseline,
        layer=layer,
        cka_estimator=cka_estimator,
        plots=plots,
        force=force,
    )
    if out:
        check_output(out, force)
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
        styled = fmt == "rich" and sys.stdout.isatty()  # bold needs a terminal
        text = render(result, fmt) if out or not styled else ""
        if out:
            write_text_atomic(out, text, force)
        if styled:
            from lossxfer.cli.common import stdout_console
            from lossxfer.report import rich_tables

            stdout_console().print(rich_tables(result))
        else:
            sys.stdout.write(text)
        _tell(quiet, [f"wrote {p}" for p in [*result.plots, *([out] if out else [])]])


def _tell(quiet: bool, lines: list[str]) -> None:
    if not quiet:
        for line in lines:
            sys.stderr.write(f"lossxfer: {line}\n")
