"""Statistics of table cells: mean, sample std, Welch's t-test, Pearson and Spearman correlation.

scipy.special alone: importing scipy.stats costs more than a whole report, and ttest_ind's array
machinery ~2 ms a call. Tests check these against scipy.stats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.05


@dataclass
class Cell:
    """Values over seeds (or over pairs of runs, for CKA) and their comparison marks."""

    values: list[float]
    p: float | None = None
    best: bool = False

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / len(self.values)

    @property
    def std(self) -> float | None:
        """Sample std (ddof=1); None with one value."""
        if len(self.values) < 2:
            return None
        m = self.mean
        return math.sqrt(math.fsum((v - m) ** 2 for v in self.values) / (len(self.values) - 1))

    @property
    def significant(self) -> bool:
        return self.p is not None and self.p < ALPHA


def welch_p(a: Cell, b: Cell) -> float | None:
    """Two-sided p of Welch's t-test, as scipy.stats.ttest_ind(equal_var=False); None: undefined."""
    from scipy.special import stdtr

    va, vb = (a.std or 0.0) ** 2 / a.n, (b.std or 0.0) ** 2 / b.n
    if a.n < 2 or b.n < 2:
        return None
    if va + vb == 0:  # both constant: scipy's t is ±inf (p = 0) or nan
        return None if a.mean == b.mean else 0.0
    t = (a.mean - b.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    return float(2 * stdtr(df, -abs(t)))


def pearson(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(r, two-sided p) as scipy.stats.pearsonr; nan for constant input."""
    from scipy.special import stdtr

    mx, my = math.fsum(xs) / len(xs), math.fsum(ys) / len(ys)
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx, syy = math.fsum((x - mx) ** 2 for x in xs), math.fsum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return math.nan, math.nan
    r = max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))
    if abs(r) == 1.0:
        return r, 0.0
    df = len(xs) - 2
    return r, float(2 * stdtr(df, -abs(r) * math.sqrt(df / (1 - r * r))))


def ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank (scipy.stats.rankdata's default)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def fmt_stat(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.3f}"


def fmt_p(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.2g}"
