"""`report`: gather records, check the names asked for, build the tables, draw the plots."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossxfer.errors import InputError
from lossxfer.report.config import DEFAULT_LAYER, ReportConfig
from lossxfer.report.records import CkaPair, RunData, Skipped, gather
from lossxfer.report.table import Table
from lossxfer.report.tables import TABLES

REPORT_FORMAT = "lossxfer.report/1"
DEFAULT_BASELINE = "softmax"


@dataclass
class Report:
    config: ReportConfig  # as resolved: baseline None where there is none to test against
    tables: list[Table]
    runs: list[RunData]
    cka: list[CkaPair]
    skipped: list[Skipped]
    warnings: list[str]
    same_layers: dict[str, str] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The tables as data (fractions as stored, not percentages)."""
        return {
            "format": REPORT_FORMAT,
            "baseline": self.config.baseline,
            "layer": self.config.layer,
            "values": "as stored: accuracies are fractions; unit '%' is how tables show them",
            "tables": [t.to_dict() for t in self.tables],
            "same_layers": self.same_layers,
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
    """Gather records, build the requested tables, and draw plots if asked.

    Unknown table names, and a --layer or --baseline that no record has, are usage errors
    (exit 2) raised before any table is built or file written. Without a baseline given,
    softmax is the baseline where there is a softmax row, else there is no t-test.
    """
    from lossxfer.registry import check_choice

    names = TABLES.names() if config.tables is None else list(config.tables)
    for name in names:
        TABLES.get(name)
    found = gather(config)
    warnings = found.warnings
    labels = found.labels
    if config.baseline is not None:
        baseline: str | None = check_choice("baseline", config.baseline, labels)
    elif DEFAULT_BASELINE in labels:
        baseline = DEFAULT_BASELINE
    else:
        baseline = None
        rows = [label for label in labels if label.startswith(f"{DEFAULT_BASELINE} (")]
        if rows:
            warnings.append(
                f"no row is plain {DEFAULT_BASELINE}, so no t-test: choose a baseline with "
                f"--baseline ({'; '.join(rows)})"
            )
    config = dataclasses.replace(config, baseline=baseline, layer=config.layer or DEFAULT_LAYER)
    tables = [t for t in (TABLES.get(n)(found, config) for n in names) if t]
    if not tables:
        raise NothingToReport(
            f"no usable result records for table {', '.join(names)} among {found.files} file(s)"
            f" ({len(found.skipped)} skipped)",
            found.skipped,
        )
    report = Report(
        config, tables, found.runs, found.cka, found.skipped, warnings, found.same_layers
    )
    if config.plots is not None:
        from lossxfer.report.plots import figures, write_plots

        figs = figures(found, config.layer or DEFAULT_LAYER, baseline)
        report.plots = write_plots(figs, config.plots, config.force)
        if not report.plots:
            warnings.append("no plots: they need probe with separation or train records, or CKA")
    return report
