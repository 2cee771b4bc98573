"""`lossxfer cka`: layer × layer CKA between one or two activation stores (docs/method.md §5).

Opens and checks the stores and feeds their row blocks (read ahead in a thread while the
previous block computes), or gathered minibatches, into a `CkaAccumulator`. The accumulator's
sums over a row range are also what a shard file holds (`shard.py`), so an unsharded run is one
shard covering every row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from lossxfer.errors import UsageError
from lossxfer.progress import ProgressFn, no_progress
from lossxfer.registry import check_choice
from lossxfer.results import Result, input_record
from lossxfer.similarity.api import SHIFT_ROWS, CkaAccumulator, auto_block_rows
from lossxfer.similarity.backends import NumpyOps, get_backend
from lossxfer.similarity.estimators import Layout, Sums
from lossxfer.similarity.registry import ESTIMATORS, PRECISIONS
from lossxfer.similarity.result import CkaResult
from lossxfer.store import Store, check_aligned, open_store

T = TypeVar("T")
LOG = logging.getLogger("lossxfer")

GROUP_BYTES = 1 << 28  # float32 bytes of rows held for a group of minibatches


@dataclass(frozen=True)
class CkaConfig:
    """What to compare and how; saved in the result record."""

    store_a: str
    store_b: str | None = None
    split: str = "test"
    layers_a: tuple[str, ...] = ()  # rows; empty or ("all",): every stored layer
    layers_b: tuple[str, ...] = ()  # columns (of B, or of A when alone); empty: as layers_a
    estimator: str = "linear"
    precision: str = "exact"
    batch_size: int = 256
    passes: int = 1
    threshold: float = 0.5
    max_n: int = 5000
    backend: str = "auto"
    device: str = "auto"
    seed: int = 0
    block_rows: int = 0  # 0: chosen from the layers' widths
    shard: tuple[int, int] | None = None  # (i, N): the i-th of N parts, 0-based

    def check(self) -> None:
        """Reject bad option values before any file is opened (exit 2)."""
        estimator = ESTIMATORS.get(self.estimator)
        check_choice("precision", self.precision, PRECISIONS)
        if self.precision == "mixed" and not estimator.mixed:
            raise UsageError(
                f"--precision mixed applies to linear and debiased, not {self.estimator}"
            )
        if self.batch_size < 4:
            raise UsageError(f"--batch-size {self.batch_size}: unbiased HSIC needs at least 4")
        if self.passes < 1:
            raise UsageError(f"--passes {self.passes}: must be at least 1")
        if not self.threshold > 0:
            raise UsageError(f"--threshold {self.threshold}: must be positive")
        if self.max_n < 4:
            raise UsageError(f"--max-n {self.max_n}: must be at least 4")
        if self.block_rows < 0:
            raise UsageError(f"--block-rows {self.block_rows}: must be positive (0: automatic)")
        if self.shard is not None:
            i, parts = self.shard
            if not 0 <= i < parts:
                raise UsageError(f"--shard {i}/{parts}: expected i/N with 0 ≤ i < N")
            if estimator.unit == "all":
                raise UsageError(
                    f"--shard: the {self.estimator} estimator needs all rows at once; not shardable"
                )


@dataclass
class Job:
    """Opened, mutually checked stores and the resolved layers of one comparison."""

    config: CkaConfig
    a: Store
    b: Store | None
    layers_a: list[str]  # the matrix's rows
    layers_b: list[str]  # the matrix's columns
    read_a: list[str]  # A's layers to read: layers_a, or with one store all rows' and columns'
    layout: Layout
    n: int
    pick: list[list[int]] | None  # one store: rows' and columns' positions in read_a

    @property
    def joint(self) -> list[tuple[Store, str]]:
        """A's layers then B's (the joint layer order of the estimators)."""
        out = [(self.a, name) for name in self.read_a]
        if self.b is not None:
            out += [(self.b, name) for name in self.layers_b]
        return out

    def sides(self, data: list[Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Rows per joint layer → (A's layers, B's layers or None), as the accumulator takes."""
        la = len(self.read_a)
        a = dict(zip(self.read_a, data[:la], strict=True))
        return a, None if self.b is None else dict(zip(self.layers_b, data[la:], strict=True))

    def stores(self) -> list[dict[str, Any]]:
        """Provenance of the stores, as recorded in results and shards."""
        index = self.a.index(self.config.split)
        checksum = hashlib.sha256(np.ascontiguousarray(index, dtype="<i8").tobytes()).hexdigest()
        return [
            {
                "path": str(s.path),
                "model": s.attrs.get("model", {}),
                "dataset": s.attrs.get("dataset"),
                "index_sha256": checksum,
            }
            for s in ([self.a] if self.b is None else [self.a, self.b])
        ]


@contextlib.contextmanager
def open_job(config: CkaConfig) -> Iterator[Job]:
    """Open the stores, resolve layers, check alignment and sizes; close them afterwards."""
    config.check()
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(open_store(config.store_a))
        b = None if config.store_b is None else stack.enter_context(open_store(config.store_b))
        split = config.split
        n = a.num_rows(split)
        layers_a = _resolve_layers(a, split, config.layers_a)
        layers_b = _resolve_layers(b or a, split, config.layers_b or config.layers_a)
        if b is None:
            read_a, widths_b = list(dict.fromkeys(layers_a + layers_b)), None
            pick = [[read_a.index(x) for x in layers_a], [read_a.index(x) for x in layers_b]]
        else:
            check_aligned(a, b, split)
            read_a, widths_b, pick = layers_a, tuple(b.dim(split, x) for x in layers_b), None
        if n < 4:
            raise UsageError(f"{a.path}: split {split!r} has {n} rows; CKA needs at least 4")
        if ESTIMATORS.get(config.estimator).unit == "all" and n > config.max_n:
            raise UsageError(
                f"{a.path}: --estimator rbf forms {n} × {n} Gram matrices; that is more rows than "
                f"--max-n {config.max_n} (raise it, or use linear, debiased or minibatch)"
            )
        layout = Layout(tuple(a.dim(split, name) for name in read_a), widths_b)
        yield Job(config, a, b, layers_a, layers_b, read_a, layout, n, pick)


def _resolve_layers(store: Store, split: str, wanted: tuple[str, ...]) -> list[str]:
    stored = store.layers(split)
    if not wanted or "all" in wanted:
        return stored
    for name in wanted:
        store.dim(split, name)  # InputError naming the store's layers if absent
    return list(dict.fromkeys(wanted))


# -- accumulation ----------------------------------------------------------------------------


def units(job: Job) -> tuple[str, int]:
    """What a shard splits: minibatches for minibatch, rows for the others."""
    config = job.config
    if ESTIMATORS.get(config.estimator).unit == "batches":
        return "batches", len(batch_plan(job.n, config.batch_size, config.passes, config.seed))
    return "rows", job.n


def accumulate(
    job: Job, lo: int, hi: int, progress: ProgressFn = no_progress
) -> tuple[CkaAccumulator, dict[str, np.ndarray]]:
    """The accumulator over work units [lo, hi) and the shifts it used (same in every shard)."""
    config = job.config
    ops = get_backend(config.backend, config.device)
    width = sum(job.layout.widths_a) + sum(job.layout.widths_b or ())
    block = config.block_rows or auto_block_rows(width, config.precision)
    fixed: dict[str, np.ndarray] = {}
    shift: tuple[Any, Any] | None = None
    if ESTIMATORS.get(config.estimator).unit != "batches":
        fixed["shift_a"] = _shift(job.a, config.split, job.read_a, job.n)
        if job.b is not None:
            fixed["shift_b"] = _shift(job.b, config.split, job.layers_b, job.n)
        shift = (fixed["shift_a"], fixed.get("shift_b"))
    acc = CkaAccumulator(
        config.estimator,
        precision=config.precision,
        threshold=config.threshold,
        backend=ops.name,
        device=ops.device,
        shift=shift,
    )
    done = 0
    if acc.estimator.unit == "batches":
        plan = batch_plan(job.n, config.batch_size, config.passes, config.seed)
        group = max(config.batch_size, config.block_rows or GROUP_BYTES // (4 * width))
        for batches, data in prefetch(_groups(job, plan[lo:hi], group, block)):
            for batch in batches:
                acc.update(*job.sides([x[batch] for x in data]))
            done += len(batches)
            progress("cka minibatches", done, hi - lo)
    else:
        blocks_b = _blocks(job.b, job, job.layers_b, block, lo, hi) if job.b is not None else None
        pairs = (
            (rows_a, None if blocks_b is None else next(blocks_b))
            for rows_a in _blocks(job.a, job, job.read_a, block, lo, hi)
        )
        for rows_a, rows_b in prefetch(pairs):
            acc.update(rows_a, rows_b)
            done += len(next(iter(rows_a.values())))
            progress("cka rows", done, hi - lo)
    if acc.updates == 0:  # an empty shard: zero sums of the right shapes
        empty = {name: np.zeros((0, job.a.dim(config.split, name))) for name in job.read_a}
        acc.update(
            empty,
            None
            if job.b is None
            else {name: np.zeros((0, job.b.dim(config.split, name))) for name in job.layers_b},
        )
    return acc, fixed


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """`items`, produced `depth` ahead in a thread: HDF5 reads overlap the BLAS work (which
    releases the GIL). The producer stops when the consumer does; its errors are re-raised."""
    slots: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    with contextlib.suppress(queue.Full):
                        slots.put((True, item), timeout=0.1)
                        break
                if stop.is_set():
                    return
            slots.put((False, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            slots.put((False, exc))

    thread = threading.Thread(target=produce, name="lossxfer-cka-read", daemon=True)
    thread.start()
    try:
        while True:
            more, item = slots.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                slots.get_nowait()
        thread.join()


def _blocks(
    store: Store, job: Job, layers: list[str], block: int, lo: int, hi: int
) -> Iterator[dict[str, np.ndarray]]:
    """Row blocks (checked finite by the store) as layer name → rows."""
    for b in store.blocks(job.config.split, layers, block_rows=block, start=lo, stop=hi):
        yield {name: b.layers[name] for name in layers}


def _shift(store: Store, split: str, layers: list[str], n: int) -> np.ndarray:
    """Per-layer shift: float64 mean of the split's first SHIFT_ROWS rows (same in every shard)."""
    block = next(store.blocks(split, layers, block_rows=SHIFT_ROWS, stop=min(n, SHIFT_ROWS)))
    return np.concatenate([block.layers[name].mean(0, dtype=np.float64) for name in layers])


def batch_plan(n: int, batch_size: int, passes: int, seed: int) -> list[np.ndarray]:
    """Row indices of every minibatch: `passes` seeded shuffles of the n rows, cut into batches.

    A last batch of fewer than 4 rows (HSIC₁ needs 4) is left out. Rows within a batch are
    sorted (HSIC₁ does not depend on their order) so that they are read in file order.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(passes):
        perm = rng.permutation(n)
        out += [np.sort(perm[i : i + batch_size]) for i in range(0, n, batch_size)]
    return [b for b in out if len(b) >= 4]


def _groups(
    job: Job, batches: list[np.ndarray], group_rows: int, block: int
) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Consecutive minibatches whose rows fit in memory together, with those rows read once.

    Yields (positions of each batch's rows in the data, data per joint layer).
    """
    start = 0
    while start < len(batches):
        stop, size = start, 0
        while stop < len(batches) and (stop == start or size + len(batches[stop]) <= group_rows):
            size += len(batches[stop])
            stop += 1
        wanted = np.unique(np.concatenate(batches[start:stop]))
        data = [
            _read_rows(store, job.config.split, name, wanted, block) for store, name in job.joint
        ]
        yield [np.searchsorted(wanted, b) for b in batches[start:stop]], data
        start = stop


def _read_rows(store: Store, split: str, layer: str, wanted: np.ndarray, block: int) -> np.ndarray:
    """Rows `wanted` (sorted, unique) of one layer, read in contiguous blocks."""
    out = np.empty((len(wanted), store.dim(split, layer)), dtype=np.float32)
    first, last = int(wanted[0]), int(wanted[-1]) + 1
    for b in store.blocks(split, [layer], block_rows=block, start=first, stop=last):
        stop = b.start + len(b.index)
        i, j = np.searchsorted(wanted, [b.start, stop])
        out[i:j] = b.layers[layer][wanted[i:j] - b.start]
    return out


def finish(
    config: dict[str, Any], layout: Layout, sums: Sums, rows: int, pick: list[list[int]] | None
) -> np.ndarray:
    """The CKA matrix from complete (merged) shard sums over `rows` rows."""
    estimator = ESTIMATORS.get(config["estimator"])
    matrix = estimator.finish(
        NumpyOps(),
        sums,
        rows,
        layout,
        config.get("threshold", 0.5),
        config.get("precision", "exact"),
    )
    return matrix if pick is None else matrix[np.ix_(pick[0], pick[1])]


# -- the verb --------------------------------------------------------------------------------


def run_cka(config: CkaConfig, progress: ProgressFn | None = None) -> Result:
    """The `cka` record: CKA between the layers of store A and those of store B (or A again)."""
    started = time.perf_counter()
    with open_job(config) as job:
        _, total = units(job)
        acc, _ = accumulate(job, 0, total, progress or no_progress)
        result = acc.result()
        if job.b is None:
            result = result.select(job.layers_a, job.layers_b)
        result.rows = job.n
        if acc.estimator.unit == "batches":
            result.extra["batches"] = total
        timing = {"backend": acc.backend, "device": acc.device}
        return record(result, job.stores(), dataclasses.asdict(config), started, timing)


def record(
    result: CkaResult,
    stores: list[dict[str, Any]],
    config: dict[str, Any],
    started: float,
    timing: dict[str, Any],
    inputs: list[dict[str, Any]] | None = None,
) -> Result:
    """The `cka` result record: the result with the stores' provenance, config and timing."""
    result.split = config["split"]
    result.precision = config.get("precision", "exact")
    result.extra["model_b"] = stores[-1]["model"]
    wall = time.perf_counter() - started
    return Result(
        kind="cka",
        metrics=result.to_dict(),
        config=config,
        inputs=inputs if inputs is not None else [input_record(s["path"]) for s in stores],
        model=stores[0]["model"],
        dataset=stores[0]["dataset"],
        timing={**timing, "wall_s": wall, "rows_per_s": result.rows / wall if wall else None},
    )
