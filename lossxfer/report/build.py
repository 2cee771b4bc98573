"""`report`: gather records, build the requested tables, draw the plots if asked."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossxfer.errors import InputError
from lossxfer.report.config import ReportConfig
from lossxfer.report.records import CkaPair, RunData, Skipped, gather
from lossxfer.report.tables import TABLES, Table

REPORT_FORMAT = "lossxfer.report/1"


@dataclass
class Report:
    config: ReportConfig
    tables: list[Table]
    runs: list[RunData]
    cka: list[CkaPair]
    skipped: list[Skipped]
    warnings: list[str]
    plots: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The tables as data (fractions as stored, not percentages)."""
        return {
            "format": REPORT_FORMAT,
            "baseline": self.config.baseline,
            "layer": self.config.layer,
            "values": "as stored: accuracies are fractions; unit '%' is how tables show them",
            "tables": [t.to_dict() for t in self.tables],
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
            "warnings": self.warnings,
            "plots": [str(p) for p in self.plots],
        }


class NothingToReport(InputError):
    """No usable record (exit 3); carries the skipped list so the CLI can show it."""

    def __init__(self, message: str, skipped: list[Skipped]) -> None:
        super().__init__(message)
        self.skipped = skipped


def run_report(config: ReportConfig) -> Report:
    """Gather records, build the requested tables, and draw plots if asked."""
    names = TABLES.names() if config.tables is None else list(config.tables)
    for name in names:
        TABLES.get(name)
    found = gather(config)
    tables = [t for t in (TABLES.get(n)(found.runs, found.cka, config) for n in names) if t]
    if not tables:
        raise NothingToReport(
            f"no usable result records for table {', '.join(names)} among {found.files} file(s)"
            f" ({len(found.skipped)} skipped)",
            found.skipped,
        )
    report = Report(config, tables, found.runs, found.cka, found.skipped, found.warnings)
    if config.plots is not None:
        from lossxfer.report.plots import figures, write_plots

        figs = figures(found.runs, found.cka, config.layer)
        report.plots = write_plots(figs, config.plots, config.force)
        if not report.plots:
            report.warnings.append(
                "no plots: they need probe with separation or train records, or CKA"
            )
    return report
