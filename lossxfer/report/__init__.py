"""`report`: paper-style tables and figures from result records alone.

records (gathering) → tables (rows, statistics from stats) → formats (renderers); plots draws
the figures from the same runs. Tables and formats are registries: `TABLES`, `FORMATS`.
"""

from lossxfer.report.build import NothingToReport, Report, run_report
from lossxfer.report.config import ReportConfig
from lossxfer.report.formats import FORMATS, destinations, format_for, render, rich_tables
from lossxfer.report.tables import TABLES

__all__ = [
    "FORMATS",
    "TABLES",
    "NothingToReport",
    "Report",
    "ReportConfig",
    "destinations",
    "format_for",
    "render",
    "rich_tables",
    "run_report",
]
