"""The table a report is made of: columns, rows of cells, a caption, and its tidy records.

Human formats show cells as `90.5 ± 0.5†`; machine formats (CSV, TSV, JSON) get one record per
cell with numbers only (`mean`, `std`, `n`, `p_value`, `significant`, `best`), values as stored
(accuracies are fractions), so that a reader needs no parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lossxfer.report.stats import Cell

DAGGER = "†"
TIDY_NUMBERS = ("mean", "std", "n", "p_value", "significant", "best")


@dataclass(frozen=True)
class Column:
    key: str  # unique in its table
    title: str  # human heading, without the unit
    unit: str = ""  # "%": fractions shown ×100
    digits: int = 3  # decimals shown
    best: bool = False  # mark the highest mean of its group
    test: bool = False  # Welch t-test against the baseline row of its group
    metric: str = ""  # tidy outputs: what was measured (source_top1, linear_top1, r2, ...)
    dataset: str = ""  # tidy outputs: on which data, where the column says it
    count: bool = False  # a count (dead units): shown as an integer when it is one

    @property
    def heading(self) -> str:
        return f"{self.title} ({self.unit})" if self.unit else self.title

    def shown(self, value: float) -> str:
        """The value as human tables print it (and as best marks compare it)."""
        if self.count and value == int(value):
            return str(int(value))
        return f"{value * (100 if self.unit == '%' else 1):.{self.digits}f}"


@dataclass
class Row:
    group: str
    label: str
    n: int | None  # seeds (None where cells count pairs of runs)
    cells: dict[str, Cell | None]
    fields: dict[str, str] = field(default_factory=dict)  # tidy identifiers (arch, data, ...)


@dataclass
class Table:
    name: str
    title: str
    first: str  # heading of the label column
    columns: list[Column]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)  # what the numbers are: the caption's body
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the summary's correlations

    @property
    def grouped(self) -> bool:
        return len({r.group for r in self.rows}) > 1

    @property
    def caption(self) -> str:
        return " ".join([f"{self.title}.", *self.notes])

    def records(self) -> list[dict[str, Any]]:
        """One tidy record per cell: the row's and column's identifiers, then the numbers."""
        names = [k for r in self.rows for k in r.fields]
        names += ["metric"] + ["dataset"] * any(c.dataset for c in self.columns)
        names = list(dict.fromkeys(names))
        out = []
        for row in self.rows:
            for column in self.columns:
                cell = row.cells.get(column.key)
                if cell is None:
                    continue
                ids = {"metric": column.metric or column.key, **row.fields}
                if column.dataset:
                    ids["dataset"] = column.dataset
                out.append({**{k: ids.get(k, "") for k in names}, **_numbers(cell)})
        unused = [k for k in names if k != "metric" and not any(r[k] for r in out)]
        return [{k: v for k, v in r.items() if k not in unused} for r in out]

    def to_dict(self) -> dict[str, Any]:
        """The table as data: its caption and tidy records (fractions as stored)."""
        return {
            "name": self.name,
            "title": self.title,
            "caption": self.caption,
            "records": self.records(),
            **self.extra,
        }


def _numbers(cell: Cell) -> dict[str, Any]:
    return {
        "mean": cell.mean,
        "std": cell.std,
        "n": cell.n,
        "p_value": cell.p,
        "significant": cell.significant,
        "best": cell.best,
    }
