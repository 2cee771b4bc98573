"""CKA on arrays: `cka`, `cka_matrix`, `minibatch_cka` and the streaming `CkaAccumulator`.

Arrays are numpy, torch (CPU or CUDA) or CuPy, n rows × any shape (trailing dimensions are
flattened, as conv maps are); the computation runs where the arrays live, in float64 (or, with
`precision="mixed"`, float32 products summed in float64). The same accumulators serve the
`lossxfer cka` store runner, so both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from lossxfer.registry import check_choice
from lossxfer.similarity.backends import Ops, backend_of, get_backend
from lossxfer.similarity.estimators import MIXED_ROWS, Layout, Sums
from lossxfer.similarity.registry import ESTIMATORS, PRECISIONS
from lossxfer.similarity.result import CkaResult

SHIFT_ROWS = 1024  # the per-layer shift is the mean of (at most) the first rows seen
BLOCK_BYTES = 1 << 28  # float64 bytes of one streamed block (~256 MiB): O(p²) memory, flat in n

Layers = Any  # one array, or a mapping of layer name → array


class CkaAccumulator:
    """CKA over data larger than memory: `update` per row block, `merge` of shards, `result`.

    `update(a, b)` adds the same rows of A and B (arrays, or dicts of layer name → array);
    without `b`, A's layers are compared with each other. Memory is O(p²) in the layers'
    widths, flat in the number of rows. For `estimator="minibatch"` each update is one
    minibatch. Accumulators merge when they were built with the same options and `shift`
    (pass `shift=first.shift` to every shard; by default the shift is the mean of the first
    update's first 1,024 rows, which keeps float32 inputs with large offsets exact).
    """

    def __init__(
        self,
        estimator: str = "linear",
        *,
        precision: str = "exact",
        threshold: float = 0.5,
        backend: str = "auto",
        device: str = "auto",
        shift: tuple[Any, Any | None] | None = None,
    ) -> None:
        self.estimator = ESTIMATORS.get(estimator)
        self.precision = check_choice("precision", precision, PRECISIONS)
        if precision == "mixed" and not self.estimator.mixed:
            raise ValueError(f"precision='mixed' applies to linear and debiased, not {estimator}")
        self.threshold = threshold
        self._backend = (backend, device)
        self.shift = shift
        self.rows = 0
        self.updates = 0
        self.layers_a: list[str] = []
        self.layers_b: list[str] | None = None
        self._ops: Ops | None = None
        self._layout: Layout | None = None
        self._state: Any = None

    def update(self, a: Layers, b: Layers | None = None) -> CkaAccumulator:
        """Add aligned rows of A (and B): arrays, or dicts of layer name → array."""
        names_a, rows_a = _layers(a, "x")
        names_b, rows_b = (None, None) if b is None else _layers(b, "y")
        n = rows_a[0].shape[0]
        if any(x.shape[0] != n for x in rows_a + (rows_b or [])):
            raise ValueError("update: every layer of A and B must have the same number of rows")
        if self._state is None:
            self._start(names_a, rows_a, names_b, rows_b)
        elif names_a != self.layers_a or names_b != self.layers_b:
            raise ValueError("update: the layers differ from the first update's")
        assert self._layout is not None
        widths = [x.shape[1] for x in rows_a + (rows_b or [])]
        if widths != [*self._layout.widths_a, *(self._layout.widths_b or ())]:
            raise ValueError("update: the layers' widths differ from the first update's")
        if n == 0:  # an empty part (a shard of nothing) still has its sums, all zero
            return self
        self._state.update(rows_a, rows_b)
        self._check_finite()
        self.rows += n
        self.updates += 1
        return self

    def _start(
        self,
        names_a: list[str],
        rows_a: list[Any],
        names_b: list[str] | None,
        rows_b: list[Any] | None,
    ) -> None:
        """The first update fixes layers, widths, backend and (unless given) the shift."""
        backend, device = self._backend
        ops = backend_of(rows_a[0]) if backend == "auto" else get_backend(backend, device)
        self._ops, self.layers_a, self.layers_b = ops, names_a, names_b
        widths_b = None if rows_b is None else tuple(x.shape[1] for x in rows_b)
        self._layout = Layout(tuple(x.shape[1] for x in rows_a), widths_b)
        if self.shift is None and self.estimator.unit == "rows":
            self.shift = (_mean(ops, rows_a), None if rows_b is None else _mean(ops, rows_b))
        self._state = self.estimator.start(
            ops, self._layout, self.shift or (None, None), self.precision
        )

    def _check_finite(self) -> None:
        """NaN or infinity would poison every sum silently; the column sums show any."""
        state = self._state
        keys = ("colsum_a", "colsum_b") if "colsum_a" in state.sums else ("hsic",)
        ops = self._ops
        assert ops is not None
        if self.estimator.unit == "all":
            last = state.sums["blocks"][-1]
            sums = [ops.numpy(x.sum()) for x in last]
        else:
            sums = [ops.numpy(state.sums[k]) for k in keys if k in state.sums]
        if not all(np.isfinite(s).all() for s in sums):
            raise ValueError(f"update {self.updates + 1}: the rows hold NaN or infinity")

    @property
    def backend(self) -> str | None:
        """Where the sums live: numpy, torch or cupy (None before the first update)."""
        return None if self._ops is None else self._ops.name

    @property
    def device(self) -> str | None:
        return None if self._ops is None else self._ops.device

    def sums(self) -> Sums:
        """The accumulated sums as float64 numpy arrays (what a CKA shard file holds)."""
        return self._started().export()

    def merge(self, other: CkaAccumulator) -> CkaAccumulator:
        """Add another part's rows (a shard of the same computation) into this one."""
        mine, theirs = self._started(), other._started()
        same = (
            self.estimator == other.estimator
            and self.precision == other.precision
            and self.layers_a == other.layers_a
            and self.layers_b == other.layers_b
            and self._layout == other._layout
        )
        if not same:
            raise ValueError("merge: the accumulators differ in estimator, precision or layers")
        shifts = zip(self.shift or (None, None), other.shift or (None, None), strict=True)
        if not all(_same(x, y) for x, y in shifts):
            raise ValueError(
                "merge: the accumulators were shifted differently; build every "
                "shard with shift=first.shift"
            )
        mine.sums = self.estimator.combine(mine.sums, theirs.sums)
        self.rows += other.rows
        self.updates += other.updates
        return self

    def result(self) -> CkaResult:
        """The CKA matrix over every row added so far."""
        state = self._started()
        assert self._ops is not None and self._layout is not None
        if self.estimator.unit != "batches" and self.rows < 4:
            raise ValueError(f"CKA needs at least 4 rows, got {self.rows}")
        matrix = self.estimator.finish(
            self._ops, state.sums, self.rows, self._layout, self.threshold, self.precision
        )
        extra = {"batches": self.updates} if self.estimator.unit == "batches" else {}
        return CkaResult(
            estimator=self.estimator.name,
            layers_a=list(self.layers_a),
            layers_b=list(self.layers_a if self.layers_b is None else self.layers_b),
            matrix=matrix,
            rows=self.rows,
            precision=self.precision,
            extra=extra,
        )

    def _started(self) -> Any:
        if self._state is None:
            raise ValueError("no rows yet: call update first")
        return self._state


def _layers(data: Layers, default: str) -> tuple[list[str], list[Any]]:
    """(names, n × p arrays) of one side; a lone array is a layer named `default`."""
    items = list(data.items()) if isinstance(data, Mapping) else [(default, data)]
    if not items:
        raise ValueError("update: no layers given")
    out = []
    for name, x in items:
        if len(x.shape) == 0:
            raise ValueError(f"layer {name!r}: expected n rows, got a scalar")
        out.append(x.reshape(x.shape[0], -1) if len(x.shape) != 2 else x)
    return [str(k) for k, _ in items], out


def auto_block_rows(width: int, precision: str = "exact") -> int:
    """Rows per streamed block for a joint width: large BLAS calls, O(p²) memory. Mixed
    precision caps a block at MIXED_ROWS, so that it is one float32 product rather than two
    halves of a block a little over the bound."""
    rows = int(np.clip(BLOCK_BYTES // (8 * max(width, 1)), 256, 16384))
    return min(rows, MIXED_ROWS) if precision == "mixed" else rows


def _width(x: Any) -> int:
    return int(np.prod(x.shape[1:], dtype=np.int64))


def _mean(ops: Ops, rows: list[Any]) -> np.ndarray:
    return np.concatenate([np.asarray(ops.numpy(ops.load(x[:SHIFT_ROWS]).mean(0))) for x in rows])


def _same(x: Any, y: Any) -> bool:
    return (x is None and y is None) or (
        x is not None and y is not None and np.array_equal(np.asarray(x), np.asarray(y))
    )


def cka(
    x: Any,
    y: Any,
    estimator: str = "linear",
    *,
    precision: str = "exact",
    threshold: float = 0.5,
    batch_size: int = 256,
) -> float:
    """CKA between two n-row arrays (numpy, torch or CuPy), in one call.

    linear and debiased are exact over all rows; minibatch takes consecutive batches of
    `batch_size` rows (for shuffled batches use `minibatch_cka`); rbf forms n × n Grams.
    """
    return cka_matrix(
        {"x": x},
        {"y": y},
        estimator,
        precision=precision,
        threshold=threshold,
        batch_size=batch_size,
    ).value


def cka_matrix(
    layers_a: Mapping[str, Any],
    layers_b: Mapping[str, Any] | None = None,
    estimator: str = "linear",
    *,
    precision: str = "exact",
    threshold: float = 0.5,
    batch_size: int = 256,
    block_rows: int = 0,
) -> CkaResult:
    """CKA between every layer of A and every layer of B (or of A again), from dicts of arrays.

    Rows are streamed in blocks of `block_rows` (0: as many as ~256 MiB of float64 hold), so
    memory stays O(p²) beyond the inputs.
    """
    acc = CkaAccumulator(estimator, precision=precision, threshold=threshold)
    n = next(iter(layers_a.values())).shape[0]
    width = sum(_width(x) for x in [*layers_a.values(), *(layers_b or {}).values()])
    step = (
        batch_size
        if acc.estimator.unit == "batches"
        else block_rows or auto_block_rows(width, precision)
    )
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        if acc.estimator.unit == "batches" and hi - lo < 4:
            break  # a last batch of fewer than 4 rows has no HSIC₁
        acc.update(
            {k: v[lo:hi] for k, v in layers_a.items()},
            None if layers_b is None else {k: v[lo:hi] for k, v in layers_b.items()},
        )
    return acc.result()


def minibatch_cka(batches: Iterable[Any], *, backend: str = "auto") -> CkaResult:
    """Minibatch CKA: Σ HSIC₁ over the batches, then the ratio (docs/method.md §5).

    Each batch is a pair (a, b) of arrays or dicts of layer name → array, or a lone one
    (its layers compared with each other). It is a ratio of sums, not a mean of per-batch CKA.
    """
    acc = CkaAccumulator("minibatch", backend=backend)
    for batch in batches:
        if isinstance(batch, tuple) and len(batch) == 2:
            acc.update(*batch)
        else:
            acc.update(batch)
    return acc.result()
