"""What a report is asked for: the one configuration every stage of `report` reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_LAYER = "penultimate"


@dataclass(frozen=True)
class ReportConfig:
    paths: tuple[Path, ...]
    tables: tuple[str, ...] | None = None  # None: every registered table the records allow
    baseline: str | None = None  # None: softmax where there is a softmax row
    layer: str | None = None  # None: penultimate, and records without it are skipped
    cka_estimator: str | None = None
    plots: Path | None = None
    force: bool = False
    caption: str | None = None  # LaTeX: replaces the tables' titles in their captions
    label: str | None = None  # LaTeX: \label (default tab:NAME)
