"""`lossxfer cka`: layer × layer CKA between one or two activation stores (REFERENCE.md §5).

Opens and checks the stores, streams row blocks (or gathers minibatches) into the estimator's
accumulators on the chosen backend, and finishes the matrix. The accumulators of a row range are
also what a shard file holds (`shard.py`), so an unsharded run is one shard covering every row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossxfer.errors import InputError, UsageError
from lossxfer.progress import ProgressFn, no_progress
from lossxfer.results import Result, input_record
from lossxfer.similarity.backends import Ops, get_backend
from lossxfer.similarity.estimators import (
    Layout,
    Minibatch,
    Streaming,
    Sums,
    cka_from_hsic,
    finish_streaming,
    rbf_hsic,
)
from lossxfer.store import Store, check_aligned, open_store

LOG = logging.getLogger("lossxfer")

ESTIMATORS = ("linear", "debiased", "minibatch", "rbf")
SHIFT_ROWS = 1024  # the per-layer shift is the mean of the split's first rows, in every shard
BLOCK_BYTES = 1 << 26  # float64 bytes per streamed block (~64 MiB): O(p²) memory, flat in n
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
        if self.estimator not in ESTIMATORS:
            raise UsageError(f"--estimator {self.estimator!r}: expected {', '.join(ESTIMATORS)}")
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
            if self.estimator == "rbf":
                raise UsageError("--shard: the rbf estimator needs all rows at once; not shardable")


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
        if config.estimator == "rbf" and n > config.max_n:
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


@dataclass
class Part:
    """Accumulators of one range of work units (rows, or minibatches) and what they cover."""

    sums: Sums
    fixed: dict[str, np.ndarray]  # must be identical across shards (the shifts)
    unit: str
    lo: int
    hi: int
    total: int
    rows: int


def units(job: Job) -> tuple[str, int]:
    """What a shard splits: rows for the streaming estimators, minibatches for minibatch."""
    if job.config.estimator == "minibatch":
        config = job.config
        return "batches", len(batch_plan(job.n, config.batch_size, config.passes, config.seed))
    return "rows", job.n


def accumulate(job: Job, ops: Ops, lo: int, hi: int, progress: ProgressFn = no_progress) -> Part:
    """Accumulators over work units [lo, hi) (not for rbf, which is not a sum)."""
    config = job.config
    width = sum(job.layout.widths_a) + sum(job.layout.widths_b or ())
    block = config.block_rows or int(np.clip(BLOCK_BYTES // (8 * width), 64, 16384))
    if config.estimator == "minibatch":
        plan = batch_plan(job.n, config.batch_size, config.passes, config.seed)
        group = max(config.batch_size, config.block_rows or GROUP_BYTES // (4 * width))
        mb = Minibatch(ops, job.layout.joint)
        rows = 0
        done = 0
        for batches, data in _groups(job, plan[lo:hi], group, block):
            for batch in batches:
                mb.update([x[batch] for x in data])
                rows += len(batch)
            done += len(batches)
            progress("cka minibatches", done, hi - lo)
        return Part(mb.export(), {}, "batches", lo, hi, len(plan), rows)
    shift_a = _shift(job.a, config.split, job.read_a, job.n)
    shift_b = None if job.b is None else _shift(job.b, config.split, job.layers_b, job.n)
    acc = Streaming(ops, job.layout, config.estimator == "debiased", shift_a, shift_b)
    blocks_b = _blocks(job.b, job, job.layers_b, block, lo, hi) if job.b is not None else None
    done = 0
    for rows_a in _blocks(job.a, job, job.read_a, block, lo, hi):
        rows_b = None if blocks_b is None else next(blocks_b)
        acc.update(rows_a, rows_b)
        done += len(rows_a[0])
        progress("cka rows", done, hi - lo)
    fixed = {"shift_a": shift_a} if shift_b is None else {"shift_a": shift_a, "shift_b": shift_b}
    return Part(acc.export(), fixed, "rows", lo, hi, job.n, hi - lo)


def _blocks(
    store: Store, job: Job, layers: list[str], block: int, lo: int, hi: int
) -> Iterator[list[np.ndarray]]:
    for b in store.blocks(job.config.split, layers, block_rows=block, start=lo, stop=hi):
        yield [_finite(store, job.config.split, name, b.layers[name], b.start) for name in layers]


def _finite(store: Store, split: str, layer: str, rows: np.ndarray, start: int) -> np.ndarray:
    """Refuse NaN or infinite activations (exit 3): they would silently poison every sum."""
    if not np.isfinite(rows).all():
        bad = start + int(np.argwhere(~np.isfinite(rows))[0][0])
        raise InputError(
            f"{store.path}: /{split}/{layer} holds a non-finite value (NaN or inf) at row {bad}"
        )
    return rows


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
        out[i:j] = _finite(store, split, layer, b.layers[layer], b.start)[wanted[i:j] - b.start]
    return out


def finish(
    estimator: str, layout: Layout, sums: Sums, rows: int, pick: list[list[int]] | None
) -> np.ndarray:
    """The CKA matrix from complete accumulators over `rows` rows."""
    if estimator == "minibatch":
        return select(cka_from_hsic(sums["hsic"], layout), pick)
    return select(finish_streaming(sums, rows, layout, estimator == "debiased"), pick)


def select(matrix: np.ndarray, pick: list[list[int]] | None) -> np.ndarray:
    """One store: the requested rows and columns of the matrix over every layer read."""
    return matrix if pick is None else matrix[np.ix_(pick[0], pick[1])]


# -- the verb --------------------------------------------------------------------------------


def run_cka(config: CkaConfig, progress: ProgressFn | None = None) -> Result:
    """CKA matrix between the layers of store A and those of store B (or A again)."""
    progress = progress or no_progress
    started = time.perf_counter()
    ops = get_backend(config.backend, config.device)
    with open_job(config) as job:
        extra: dict[str, Any] = {}
        if config.estimator == "rbf":
            data = [_finite(s, config.split, x, s.read(config.split, x), 0) for s, x in job.joint]
            hsic = rbf_hsic(ops, data, config.threshold)
            matrix = select(cka_from_hsic(hsic, job.layout), job.pick)
        else:
            unit, total = units(job)
            part = accumulate(job, ops, 0, total, progress)
            matrix = finish(config.estimator, job.layout, part.sums, part.rows, job.pick)
            if unit == "batches":
                extra["batches"] = total
        ops.sync()
        wall = time.perf_counter() - started
        stores = job.stores()
        return make_result(
            dataclasses.asdict(config),
            stores,
            (job.layers_a, job.layers_b, job.n),
            matrix,
            inputs=[input_record(s["path"]) for s in stores],
            timing={
                "wall_s": wall,
                "rows_per_s": job.n / wall,
                "backend": ops.name,
                "device": ops.device,
            },
            extra=extra,
        )


def make_result(
    config: dict[str, Any],
    stores: list[dict[str, Any]],
    shape: tuple[list[str], list[str], int],
    matrix: np.ndarray,
    inputs: list[dict[str, Any]],
    timing: dict[str, Any],
    extra: dict[str, Any],
) -> Result:
    """The `cka` result record (docs/internals.md): the matrix, its layer names, provenance.

    `shape` is (layers of A, layers of B, rows of the split).
    """
    layers_a, layers_b, rows = shape
    metrics = {
        "estimator": config["estimator"],
        "split": config["split"],
        "layers_a": layers_a,
        "layers_b": layers_b,
        "matrix": matrix.tolist(),
        "model_b": stores[-1]["model"],
        "rows": rows,
        **extra,
    }
    return Result(
        kind="cka",
        metrics=metrics,
        config=config,
        inputs=inputs,
        model=stores[0]["model"],
        dataset=stores[0]["dataset"],
        timing=timing,
    )
