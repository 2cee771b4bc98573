"""Renderers: the report's tables as rich, markdown, LaTeX (for people) or CSV, TSV, JSON (tidy).

Each format is registered in FORMATS with the -o suffix that implies it, so `--format` help,
completion and validation read the names from one place. Human formats print cells as
`90.5 ± 0.5†` under headings with units and a caption that states the statistics; CSV and TSV
hold exactly one table as tidy records (Table.records), JSON a lossxfer.report/1 document.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossxfer.errors import UsageError
from lossxfer.registry import Registry
from lossxfer.report.build import Report
from lossxfer.report.stats import Cell
from lossxfer.report.table import DAGGER, Column, Row, Table

Renderer = Callable[[Report, list[Table]], str]


@dataclass(frozen=True)
class Format:
    render: Renderer
    suffix: str  # the -o suffix that implies this format, and of the files it writes
    single: bool  # holds one table only (CSV, TSV): several tables go to one file each
    help: str


FORMATS: Registry[Format] = Registry("report format")
DIRECTORY_FORMAT = "csv"  # what `-o DIR` writes without --format


def _format(name: str, suffix: str, help: str, single: bool = False) -> Callable[[Renderer], Any]:
    def add(render: Renderer) -> Renderer:
        FORMATS.register(name)(Format(render, suffix, single, help))
        return render

    return add


def is_directory(out: Path) -> bool:
    """-o names a folder (one file per table) when it is one or has no suffix."""
    return out.is_dir() or not out.suffix


def format_for(out: Path | None) -> str:
    """The format an -o path implies: by suffix; csv for a folder; rich for the terminal."""
    if out is None:
        return "rich"
    if is_directory(out):
        return DIRECTORY_FORMAT
    suffix = out.suffix.lower()
    return next((n for n in FORMATS if FORMATS.get(n).suffix == suffix), "rich")


def destinations(
    fmt: str, out: Path | None, tables: list[str]
) -> list[tuple[Path | None, list[str]]]:
    """Where the tables go: [(file, or None for stdout; table names)].

    A folder gets one file per table, named after it (summary.csv); a file name with several
    tables in a one-table format gets one file per table beside it (name-summary.csv)."""
    form = FORMATS.get(fmt)
    if out is None:
        if form.single and len(tables) > 1:
            raise UsageError(
                f"{fmt} holds one table and the records give {len(tables)} "
                f"({', '.join(tables)}): choose one with --table, or write one file per table "
                "with -o DIR"
            )
        return [(None, tables)]
    if is_directory(out):
        return [(out / f"{name}{form.suffix}", [name]) for name in tables]
    if form.single and len(tables) > 1:
        return [(out.with_name(f"{out.stem}-{n}{out.suffix}"), [n]) for n in tables]
    return [(out, tables)]


def render(report: Report, fmt: str, tables: list[str] | None = None) -> str:
    """The report's tables (all, or those named) as text in one format."""
    chosen = [t for t in report.tables if tables is None or t.name in tables]
    return FORMATS.get(fmt).render(report, chosen)


# -- human formats ----------------------------------------------------------------------------


@_format("rich", ".txt", "a table for the terminal (bold best values)")
def _rich(report: Report, tables: list[Table]) -> str:
    from rich.console import Console

    # wide enough never to wrap a cell: a file or pipe has no width to fit
    console = Console(file=io.StringIO(), width=1000, color_system=None, soft_wrap=True)
    console.print(rich_tables(tables))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in out.splitlines()) + "\n"


def rich_tables(tables: list[Table]) -> Any:
    """One Rich renderable for a terminal: the tables with bold best values, captions beneath."""
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    out: list[Any] = []
    for table in tables:
        rt = RichTable(title=table.title, caption=" ".join(table.notes), caption_justify="left")
        head = _header(table)
        for i, name in enumerate(head):
            rt.add_column(name, justify="left" if i < _labels(table) else "right")
        for row in table.rows:
            cells = [Text(c) for c in _labels_of(table, row)]
            for column in table.columns:
                value, mark = _cell_text(row.cells.get(column.key), column, row, "–")
                cell = row.cells.get(column.key)
                text = Text()
                text.append(value, style="bold" if cell is not None and cell.best else "")
                cells.append(text.append(mark))
            rt.add_row(*cells)
        out += [Text()] * bool(out) + [rt]
    return Group(*out)


@_format("markdown", ".md", "GitHub markdown tables, caption beneath")
def _markdown(report: Report, tables: list[Table]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    parts = []
    for table in tables:
        head = _header(table)
        lines = [f"### {table.title}", "", "| " + " | ".join(map(esc, head)) + " |"]
        aligns = ["---"] * _labels(table) + ["---:"] * (len(head) - _labels(table))
        lines.append("|" + "|".join(aligns) + "|")
        for row in table.rows:
            cells = _labels_of(table, row)
            for column in table.columns:
                cell = row.cells.get(column.key)
                value, mark = _cell_text(cell, column, row, "–")
                cells.append((f"**{value}**" if cell is not None and cell.best else value) + mark)
            lines.append("| " + " | ".join(map(esc, cells)) + " |")
        lines += ["", " ".join(table.notes)]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


@_format("latex", ".tex", "LaTeX table environments (booktabs; \\usepackage{booktabs})")
def _latex(report: Report, tables: list[Table]) -> str:
    config = report.config
    return "\n".join(latex_table(t, config.caption, config.label, len(tables)) for t in tables)


def latex_table(table: Table, caption: str | None, label: str | None, count: int = 1) -> str:
    """A booktabs table: a column with any ± is an `r@{}l` pair, so that means and ± align;
    one without (n = 1 everywhere) a plain `r` column."""
    title = table.title
    if caption is not None:
        title = caption if count == 1 else f"{caption}: {title}"
    name = (
        f"tab:{table.name}" if label is None else label if count == 1 else f"{label}-{table.name}"
    )
    paired = [_has_std(table, c) for c in table.columns]
    lead = [table.first] + (["$n$"] if _counted(table) else [])
    spec = "l" + "r" * (len(lead) - 1) + "".join("r@{}l" if p else "r" for p in paired)
    head = [*lead] + [
        rf"\multicolumn{{2}}{{c}}{{{_tex(c.heading)}}}" if p else _tex(c.heading)
        for c, p in zip(table.columns, paired, strict=True)
    ]
    width = len(lead) + len(paired) + sum(paired)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{_tex(' '.join([title + '.', *table.notes]))}}}",
        rf"\label{{{name}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
    ]
    previous = None
    for row in table.rows:
        if table.grouped and row.group != previous:
            if previous is not None:
                lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\emph{{{_tex(row.group)}}}}} \\")
        previous = row.group
        cells = [_tex(row.label)] + ([str(row.n)] if _counted(table) else [])
        for column, pair in zip(table.columns, paired, strict=True):
            cells.append(_latex_cell(row.cells.get(column.key), column, row, pair))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _has_std(table: Table, column: Column) -> bool:
    return any((c := r.cells.get(column.key)) is not None and c.std is not None for r in table.rows)


def _latex_cell(cell: Cell | None, column: Column, row: Row, pair: bool) -> str:
    """`mean & ±std†` as two table cells (`pair`), else `mean†` as one."""
    if cell is None:
        return r"\multicolumn{2}{c}{--}" if pair else "--"
    bold = (lambda t: rf"\textbf{{{t}}}") if cell.best else (lambda t: t)
    mean = bold(column.shown(cell.mean))
    std = rf"${{}}\pm{{}}${bold(column.shown(cell.std))}" if cell.std is not None else ""
    mark = r"$^\dagger$" if cell.significant else ""
    count = rf"\,($n$={cell.n})" if cell.n != row.n else ""
    return f"{mean} & {std}{mark}{count}" if pair else f"{mean}{mark}{count}"


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "²": r"$^2$",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    "ρ": r"$\rho$",
    "−": r"$-$",
    "<": r"$<$",
    ">": r"$>$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "×": r"$\times$",
    "…": r"\ldots{}",
    "–": "--",
    "—": "---",
}


def _tex(text: str) -> str:
    """Escape for LaTeX; a letter with a combining macron (d̄) becomes $\\bar{d}$."""
    out: list[str] = []
    for ch in text:
        if ch == "\u0304" and out:
            out[-1] = rf"$\bar{{{out[-1]}}}$"
        else:
            out.append(_LATEX.get(ch, ch))
    return "".join(out)


# -- tidy formats -----------------------------------------------------------------------------


@_format("csv", ".csv", "one table as tidy comma-separated records", single=True)
def _csv(report: Report, tables: list[Table]) -> str:
    return _delimited(tables, ",")


@_format("tsv", ".tsv", "one table as tidy tab-separated records", single=True)
def _tsv(report: Report, tables: list[Table]) -> str:
    return _delimited(tables, "\t")


@_format("json", ".json", "a lossxfer.report/1 document: tidy records per table")
def _json(report: Report, tables: list[Table]) -> str:
    from lossxfer.results import dumps

    doc = report.to_dict()
    doc["tables"] = [t.to_dict() for t in tables]
    return dumps(doc) + "\n"


def _delimited(tables: list[Table], delimiter: str) -> str:
    """The records of one table: a header, then one line per cell; no value is quoted text."""
    (table,) = tables
    records = table.records()
    buf = io.StringIO()
    names = list(records[0]) if records else ["metric"]
    writer = csv.DictWriter(buf, names, delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: _plain(v) for k, v in record.items()})
    return buf.getvalue()


def _plain(value: Any) -> str:
    """A number to 12 significant digits (no binary noise like 0.9049999999999999), None as
    an empty field."""
    if value is None:
        return ""
    return format(value, ".12g") if isinstance(value, float) else str(value)


# -- shared by the human formats --------------------------------------------------------------


def _counted(table: Table) -> bool:
    return bool(table.rows) and table.rows[0].n is not None


def _header(table: Table) -> list[str]:
    head = ["Group"] if table.grouped else []
    head.append(table.first)
    if _counted(table):
        head.append("n")
    return head + [c.heading for c in table.columns]


def _labels(table: Table) -> int:
    """How many leading columns are labels (left-aligned): group (if any) and the row label."""
    return 2 if table.grouped else 1


def _labels_of(table: Table, row: Row) -> list[str]:
    out = [row.group] if table.grouped else []
    out.append(row.label)
    if row.n is not None:
        out.append(str(row.n))
    return out


def _cell_text(cell: Cell | None, column: Column, row: Row, missing: str) -> tuple[str, str]:
    """('76.3 ± 0.1', '† (n=2)'): the value, then its marks (count only where it differs)."""
    if cell is None:
        return missing, ""
    text = column.shown(cell.mean)
    if cell.std is not None:
        text += f" ± {column.shown(cell.std)}"
    mark = DAGGER if cell.significant else ""
    count = f" (n={cell.n})" if cell.n != row.n else ""
    return text, mark + count
