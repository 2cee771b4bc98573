"""The CKA estimator registry: one object per estimator, light to import (help, completion).

Each `Estimator` says what an update and a shard take (`unit`), whether the mixed-precision
path applies, how it starts its accumulator on a backend, how two parts' sums combine and how
the sums finish into a CKA matrix (the maths is in `estimators.py`, docs/method.md §5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lossxfer.registry import Registry

if TYPE_CHECKING:
    from lossxfer.similarity.backends import Ops
    from lossxfer.similarity.estimators import Layout, Sums

PRECISIONS = ("exact", "mixed")


@dataclass(frozen=True)
class Estimator:
    """How one estimator accumulates and finishes.

    unit: rows (row blocks, summed exactly), batches (one update is one minibatch) or all
    (every row at once: not shardable). mixed: whether `precision="mixed"` applies. unbiased:
    HSIC₁ (Song et al.) in place of the biased HSIC, for the row-streamed estimators.
    """

    name: str
    summary: str
    unit: Literal["rows", "batches", "all"]
    mixed: bool = False
    unbiased: bool = False

    def start(self, ops: Ops, layout: Layout, shifts: tuple[Any, Any], precision: str) -> Any:
        """An empty accumulator on `ops` (`update(rows_a, rows_b)`, `sums`, `export()`)."""
        from lossxfer.similarity import estimators as e

        if self.unit == "batches":
            return e.Minibatch(ops, layout.joint)
        if self.unit == "all":
            return e.Gather(ops)
        return e.Streaming(ops, layout, self.unbiased, *shifts, precision=precision)

    def combine(self, a: Sums, b: Sums) -> Sums:
        """The sums of two disjoint parts: added (rbf: its row blocks, concatenated)."""
        return {k: a[k] + b[k] for k in a}

    def finish(
        self,
        ops: Ops,
        sums: Sums,
        rows: int,
        layout: Layout,
        threshold: float,
        precision: str = "exact",
    ) -> Any:
        """The CKA matrix (A's layers × B's) from complete sums over `rows` rows."""
        import numpy as np

        from lossxfer.similarity import estimators as e

        if self.unit == "batches":
            hsic, scale = (np.asarray(ops.numpy(sums[k])) for k in ("hsic", "scale"))
            return e.cka_from_hsic(hsic, layout, scale, e.rounding_floor(rows, "exact"))
        if self.unit == "all":
            blocks = sums["blocks"]
            layers = [ops.rows_concat([b[u] for b in blocks]) for u in range(layout.joint)]
            return e.cka_from_hsic(e.rbf_hsic(ops, layers, threshold), layout)
        host = {k: np.asarray(ops.numpy(v)) for k, v in sums.items()}
        return e.finish_streaming(host, rows, layout, self.unbiased, precision)


ESTIMATORS: Registry[Estimator] = Registry("estimator")
for _estimator in (
    Estimator("linear", "biased HSIC, exact over all rows", "rows", mixed=True),
    Estimator(
        "debiased",
        "unbiased HSIC (Song et al.), exact over all rows",
        "rows",
        mixed=True,
        unbiased=True,
    ),
    Estimator("minibatch", "Σ of per-batch unbiased HSIC (Nguyen et al.), any width", "batches"),
    Estimator("rbf", "Gaussian kernel on full n × n Grams (≤ --max-n rows)", "all"),
):
    ESTIMATORS.register(_estimator.name)(_estimator)
