"""Renderers: the report's tables as rich, markdown, CSV, TSV, LaTeX or JSON text.

Each format is registered in FORMATS with the -o suffix that implies it, so `--format` help,
completion and validation read the names from one place.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossxfer.registry import Registry
from lossxfer.report.build import Report
from lossxfer.report.stats import Cell
from lossxfer.report.tables import DAGGER, Column, Row, Table, shown


@dataclass(frozen=True)
class Format:
    render: Callable[[Report], str]
    suffix: str | None  # the -o suffix that implies this format
    help: str


FORMATS: Registry[Format] = Registry("report format")


def _format(name: str, suffix: str | None, help: str) -> Callable[[Callable[[Report], str]], Any]:
    def add(render: Callable[[Report], str]) -> Callable[[Report], str]:
        FORMATS.register(name)(Format(render, suffix, help))
        return render

    return add


def format_for(out: Path | None) -> str:
    """Output format implied by an -o file name (rich when there is none or it says nothing)."""
    suffix = out.suffix.lower() if out else None
    return next((n for n in FORMATS if suffix and FORMATS.get(n).suffix == suffix), "rich")


def render(report: Report, fmt: str) -> str:
    """The report as text in one format (rich: plain text, as a terminal without colour shows)."""
    return FORMATS.get(fmt).render(report)


@_format("rich", None, "a table for the terminal (bold best values)")
def _rich(report: Report) -> str:
    from rich.console import Console

    # wide enough never to wrap a cell: a file or pipe has no width to fit
    console = Console(file=io.StringIO(), width=1000, color_system=None, soft_wrap=True)
    console.print(rich_tables(report))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in out.splitlines()) + "\n"


@_format("markdown", ".md", "GitHub markdown tables")
def _markdown_all(report: Report) -> str:
    return "\n".join(_markdown(t) for t in report.tables)


@_format("csv", ".csv", "comma-separated values")
def _csv(report: Report) -> str:
    return _delimited_all(report, ",")


@_format("tsv", ".tsv", "tab-separated values")
def _tsv(report: Report) -> str:
    return _delimited_all(report, "\t")


@_format("latex", ".tex", "booktabs LaTeX tables")
def _latex_all(report: Report) -> str:
    return "\n".join(_latex(t) for t in report.tables)


@_format("json", ".json", "one JSON document (lossxfer.report/1)")
def _json(report: Report) -> str:
    from lossxfer.results import dumps

    return dumps(report.to_dict()) + "\n"


def _delimited_all(report: Report, delimiter: str) -> str:
    parts = [_delimited(t, delimiter) for t in report.tables]
    if len(parts) == 1:  # one table: plain CSV, no title comment
        parts = [parts[0].partition("\n")[2]]
    return "\n".join(parts)


def _cell_parts(cell: Cell, column: Column, row: Row) -> tuple[str, str, str]:
    """(value, mark, count): '76.3 ± 0.1', '†', ' (n=2)' (count only where it differs)."""
    text = shown(cell.mean, column.unit)
    if cell.std is not None:
        text += f" ± {shown(cell.std, column.unit)}"
    mark = DAGGER if cell.significant else ""
    count = f" (n={cell.n})" if cell.n != row.n else ""
    return text, mark, count


def _header(table: Table) -> list[str]:
    head = ["Group"] if table.grouped else []
    head.append(table.first)
    if table.rows and table.rows[0].n is not None:
        head.append("n")
    return head + [c.title for c in table.columns]


def _labels(table: Table) -> int:
    """How many leading columns are labels (left-aligned): group (if any) and the row label."""
    return 2 if table.grouped else 1


def _cells(
    table: Table, row: Row, bold: Callable[[str], str], dagger: str, missing: str
) -> list[str]:
    out = [row.group] if table.grouped else []
    out.append(row.label)
    if row.n is not None:
        out.append(str(row.n))
    for column in table.columns:
        cell = row.cells.get(column.key)
        if cell is None:
            out.append(missing)
            continue
        text, mark, count = _cell_parts(cell, column, row)
        out.append((bold(text) if cell.best else text) + (dagger if mark else "") + count)
    return out


def _markdown(table: Table) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    head = _header(table)
    lines = [f"### {table.title}", "", "| " + " | ".join(map(esc, head)) + " |"]
    aligns = ["---"] * _labels(table) + ["---:"] * (len(head) - _labels(table))
    lines.append("|" + "|".join(aligns) + "|")
    for row in table.rows:
        cells = _cells(table, row, lambda t: f"**{t}**", DAGGER, "–")
        lines.append("| " + " | ".join(map(esc, cells)) + " |")
    lines += ["", *table.notes]
    return "\n".join(lines) + "\n"


def _delimited(table: Table, delimiter: str) -> str:
    """CSV/TSV: the table's title as a comment line, then the cells as shown (no bold)."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    writer.writerow(_header(table))
    for row in table.rows:
        writer.writerow(_cells(table, row, lambda t: t, DAGGER, ""))
    return f"# {table.title}\n{buf.getvalue()}"


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
}


def _tex(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def _latex(table: Table) -> str:
    """A booktabs tabular; title and notes as comments, ready to wrap in a table environment."""
    head = _header(table)
    spec = "l" * _labels(table) + "r" * (len(head) - _labels(table))
    lines = [f"% {table.title}", r"\begin{tabular}{" + spec + "}"]
    lines += [r"\toprule", " & ".join(_tex(h) for h in head) + r" \\", r"\midrule"]
    previous = None
    for row in table.rows:
        if previous is not None and row.group != previous:
            lines.append(r"\midrule")
        previous = row.group
        cells = _cells(table, row, lambda t: "\0" + t + "\1", "\2", "--")
        escaped = (
            _tex(c).replace("\0", r"\textbf{").replace("\1", "}").replace("\2", r"$^\dagger$")
            for c in cells
        )
        lines.append(" & ".join(escaped) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", *(f"% {n}" for n in table.notes)]
    return "\n".join(lines) + "\n"


def rich_tables(report: Report) -> Any:
    """One Rich renderable for a terminal: the tables with bold best values, notes beneath."""
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    out: list[Any] = []
    for table in report.tables:
        rt = RichTable(title=table.title, caption="\n".join(table.notes), caption_justify="left")
        head = _header(table)
        for i, name in enumerate(head):
            rt.add_column(name, justify="left" if i < _labels(table) else "right")
        for row in table.rows:
            cells = _cells(table, row, lambda t: "\0" + t + "\1", DAGGER, "–")
            rendered = []
            for c in cells:
                text = Text()
                before, _, rest = c.partition("\0")
                bold, _, after = rest.partition("\1")
                text.append(before)
                text.append(bold, style="bold")
                text.append(after)
                rendered.append(text)
            rt.add_row(*rendered)
        out += [Text()] * bool(out) + [rt]
    return Group(*out)
