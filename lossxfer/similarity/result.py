"""`CkaResult`: a CKA matrix with its layer names — the `metrics` of a `cka` result record."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lossxfer.results import Record

if TYPE_CHECKING:
    from rich.table import Table


@dataclass
class CkaResult(Record):
    """CKA between every layer of A (rows of `matrix`) and every layer of B (its columns).

    NaN marks an undefined value (a constant layer). `to_dict()` is the `metrics` object of the
    `lossxfer.result/1` record of kind `cka` (`lossxfer cka -o` adds the provenance around it);
    `extra` holds the store runner's `model_b`, `batches` and `shards`.
    """

    estimator: str
    layers_a: list[str]
    layers_b: list[str]
    matrix: Any  # numpy float64, len(layers_a) × len(layers_b); JSON lists are converted
    rows: int
    precision: str = "exact"
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import numpy as np

        rows = [[np.nan if v is None else v for v in row] for row in list(self.matrix)]
        shape = (len(self.layers_a), len(self.layers_b))
        self.matrix = np.array(rows, dtype=np.float64).reshape(shape)

    @property
    def value(self) -> float:
        """The one CKA value of a 1 × 1 result (two arrays, or one layer each)."""
        if self.matrix.shape != (1, 1):
            rows, cols = self.matrix.shape
            raise ValueError(f"a {rows} × {cols} CKA matrix has no single value; use [a, b]")
        return float(self.matrix[0, 0])

    def __getitem__(self, pair: tuple[str, str]) -> float:
        """CKA of (layer of A, layer of B)."""
        a, b = pair
        return float(self.matrix[self.layers_a.index(a), self.layers_b.index(b)])

    def select(self, layers_a: list[str], layers_b: list[str]) -> CkaResult:
        """The sub-matrix of these layers (rows of A, columns of B), in this order."""
        rows = [self.layers_a.index(x) for x in layers_a]
        cols = [self.layers_b.index(x) for x in layers_b]
        matrix = self.matrix[rows][:, cols]
        return replace(self, matrix=matrix, layers_a=list(layers_a), layers_b=list(layers_b))

    def __rich__(self) -> Table:
        """Rows: layers of A; columns: layers of B; three decimals."""
        from rich.table import Table

        where = f", split {self.split}" if self.split else ""
        table = Table(title=f"CKA ({self.estimator}{where}, {self.rows} rows)")
        table.add_column("A \\ B")
        for name in self.layers_b:
            table.add_column(name, justify="right")
        for name, row in zip(self.layers_a, self.matrix.tolist(), strict=True):
            table.add_row(name, *("nan" if math.isnan(v) else f"{v:.3f}" for v in row))
        return table
