"""`CkaResult`: a CKA matrix with its layer names, as the `cka` result record and a Rich table."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossxfer.errors import InputError
from lossxfer.results import Result, now

if TYPE_CHECKING:
    import numpy as np
    from rich.table import Table

# Metrics that are fields of their own; anything else in the record's metrics is kept in `extra`.
_METRICS = ("estimator", "precision", "split", "layers_a", "layers_b", "matrix", "model_b", "rows")


@dataclass
class CkaResult:
    """CKA between every layer of A (rows of `matrix`) and every layer of B (its columns).

    NaN marks an undefined value (a constant layer). `to_dict()` is the `lossxfer.result/1`
    record of kind `cka` that `lossxfer cka -o` writes; `from_dict` reads one back.
    """

    matrix: np.ndarray
    layers_a: list[str]
    layers_b: list[str]
    estimator: str
    rows: int
    precision: str = "exact"
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # batches, shards
    model: dict[str, Any] = field(default_factory=dict)
    model_b: dict[str, Any] = field(default_factory=dict)
    dataset: Any = None
    config: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=now)

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
        return dataclasses.replace(self, matrix=matrix, layers_a=layers_a, layers_b=layers_b)

    def record(self) -> Result:
        """The `lossxfer.result/1` record (what the CLI writes and `report` reads)."""
        metrics = {
            "estimator": self.estimator,
            "precision": self.precision,
            "split": self.split,
            "layers_a": list(self.layers_a),
            "layers_b": list(self.layers_b),
            "matrix": self.matrix.tolist(),
            "model_b": self.model_b,
            "rows": self.rows,
            **self.extra,
        }
        return Result(
            kind="cka",
            metrics=metrics,
            config=self.config,
            inputs=self.inputs,
            model=self.model,
            dataset=self.dataset,
            timing=self.timing,
            created=self.created,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.record().to_dict()

    def write(self, path: str | os.PathLike[str], force: bool = False) -> Path:
        return self.record().write(path, force)

    @classmethod
    def from_dict(cls, data: Any, source: object = "result") -> CkaResult:
        """Read a `cka` record (as written by `to_dict` or `lossxfer cka -o`)."""
        import numpy as np

        rec = data if isinstance(data, Result) else Result.from_dict(data, source)
        if rec.kind != "cka":
            raise InputError(f"{source}: a {rec.kind!r} result, not a 'cka' one")
        m = rec.metrics
        try:
            rows = [[np.nan if v is None else v for v in row] for row in m["matrix"]]
            matrix = np.array(rows, dtype=np.float64).reshape(len(m["layers_a"]), -1)
            return cls(
                matrix=matrix,
                layers_a=list(m["layers_a"]),
                layers_b=list(m["layers_b"]),
                estimator=m["estimator"],
                rows=int(m["rows"]),
                precision=m.get("precision", "exact"),
                split=m.get("split"),
                extra={k: v for k, v in m.items() if k not in _METRICS},
                model=rec.model,
                model_b=m.get("model_b") or {},
                dataset=rec.dataset,
                config=rec.config,
                inputs=rec.inputs,
                timing=rec.timing,
                created=rec.created,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: malformed cka record ({exc})") from None

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
