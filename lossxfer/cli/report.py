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
    complete_path,
    parse_list,
)

TABLE_HELP = (
    "Tables to show, comma-separated, or all (the default: every table the records allow). "
    "summary: the study's compact table — source accuracy, linear and kNN transfer averaged over "
    "the transfer datasets, R², CKA with the baseline at --layer — with the Pearson and Spearman "
    "correlation of R² and transfer over runs beneath. transfer: source accuracy and probe "
    "accuracy per transfer dataset and their average. separation: R² and the other separation "
    "statistics. finetune: fine-tuning accuracy per dataset. cka: per layer, CKA between seeds of "
    "one objective vs between objectives."
)


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
    table: Annotated[str, typer.Option("--table", help=TABLE_HELP)] = "all",
    format_: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="rich, markdown, csv, tsv, latex or json (default: from the -o suffix "
            ".md/.csv/.tsv/.tex/.json, else rich). --json is --format json.",
        ),
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
    fmt = "json" if json_ else format_ or format_for(out)
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    tables = parse_list([table])
    config = ReportConfig(
        paths=tuple(paths),
        tables=TABLES if "all" in tables else tuple(tables),
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
