"""What a report is asked for: the one configuration every stage of `report` reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ReportConfig:
    paths: tuple[Path, ...]
    tables: tuple[str, ...] | None = None  # None: every registered table the records allow
    baseline: str = "softmax"
    layer: str = "penultimate"
    cka_estimator: str | None = None
    plots: Path | None = None
    force: bool = False
