"""Activation extraction: checkpoint + data → HDF5 activation store (docs/formats.md).

The model is rebuilt from the checkpoint alone and run in eval mode under inference mode;
forward hooks on the named layers (docs/method.md §3) pool each activation (global average or
flatten) and cast it on the device. A three-stage pipeline keeps the forward pass busy: a
background thread prepares the next batch while the network runs, and another writes finished
rows to HDF5. Both hand over through queues of two items, so memory does not grow with N.

Images are preprocessed with the checkpoint's input spec (size, mean, std): features of a
network are those of the inputs it was trained to see, whatever dataset they come from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lossxfer.activations import (
    POOLS,
    QUEUE_DEPTH,
    hooked,
    pool_activation,
    resolve_layers,
    stream_rows,
)
from lossxfer.errors import InputError, UsageError
from lossxfer.fsio import check_output, sha256
from lossxfer.progress import ProgressFn, Stages, no_progress
from lossxfer.results import Result
from lossxfer.shards import parse_shard, shard_range
from lossxfer.store import LayerSpec, StoreWriter

if TYPE_CHECKING:
    import torch

    from lossxfer.checkpoint import CheckpointMeta
    from lossxfer.data import Data, Split
    from lossxfer.inputs import InputSpec
    from lossxfer.nets import Network

DEFAULT_LAYERS = ("penultimate", "logits")


@dataclass(frozen=True)
class ExtractConfig:
    """What `lossxfer extract` does; saved in the result record."""

    checkpoint: str
    data: str
    out: str
    splits: tuple[str, ...] = ("train", "test")
    layers: tuple[str, ...] = DEFAULT_LAYERS  # or ("all",)
    pool: str = "avg"
    dtype: str = "float32"
    compression: str | None = None
    batch_size: int = 256
    limit: int | None = None  # first N rows of each split
    classes: tuple[int, ...] | None = None  # None: the checkpoint's classes on its own data
    label_map: str | None = None  # store superclass labels (lossxfer.labelmap); None: classes
    val_fraction: float | None = None  # None: 0.1 when `val` is extracted, else 0
    split_seed: int = 0
    download: bool = False
    device: str = "auto"
    threads: int | None = None  # CPU intra-op threads; None: auto (backend.cpu_threads)
    workers: int = 4  # DataLoader processes for file-backed datasets
    shard: str | None = None  # "i/N": rows [i·n/N, (i+1)·n/N) of every split, 0 ≤ i < N
    force: bool = False


def run_extract(config: ExtractConfig, progress: ProgressFn | None = None) -> Result:
    """Extract the configured layers of every split into `config.out`; the `extract` result."""
    from lossxfer.backend import cpu_threads, resolve_device
    from lossxfer.checkpoint import load_checkpoint

    started = time.perf_counter()
    stages = Stages()
    check_output(config.out, config.force)
    shard = parse_shard(config.shard)
    _check_options(config)
    writer = StoreWriter(config.out, {}, config.force, config.dtype, config.compression)
    device = resolve_device(config.device)
    network, meta = load_checkpoint(config.checkpoint)
    sha = sha256(config.checkpoint)
    stages.done("load")
    data = _load_data(config, meta)
    layers = resolve_layers(network.layer_names(), config.layers, network.layer_names())
    splits = {name: data.split(name) for name in config.splits}
    sizes = {name: min(len(s), config.limit or len(s)) for name, s in splits.items()}
    empty = [name for name, n in sizes.items() if n == 0]
    if empty:  # a store of 0 rows would only fail later, in every reader
        raise UsageError(f"--data {data.spec}: the {empty[0]} split is empty; nothing to extract")
    ranges = {name: shard_range(n, shard) for name, n in sizes.items()}
    model = meta.provenance(sha)
    attrs: dict[str, Any] = {
        "checkpoint": str(config.checkpoint),
        "checkpoint_sha256": sha,
        "arch": meta.arch,
        "objective": meta.objective,
        "objective_opts": meta.objective_opts,
        "data": str(data.spec),
        "dataset": data.describe(),
        "model": model,
        "transform": describe_transform(next(iter(splits.values())).dataset),
        "pool": config.pool,
    }
    if shard is not None:
        attrs["shard"] = {"index": shard[0], "count": shard[1], "split_rows": sizes}
    stages.done("data")
    network = network.to(device).eval()
    report = progress or no_progress
    forward_s = 0.0
    writer.attrs = attrs
    shape = (meta.input.channels, meta.input.size, meta.input.size)
    with cpu_threads(device, config.threads, network, shape) as threads:
        specs = layer_specs(network, layers, config.pool, meta.input, device)
        # The store and its splits are created here, before the stream: on the writer thread,
        # beside the first forward passes, the GIL hand-overs cost more than they overlapped.
        # It is closed (flushed, synced, renamed) once every queued write is done.
        with writer:
            for name, (lo, hi) in ranges.items():
                writer.create_split(name, hi - lo, specs)
            streaming = time.perf_counter()
            with _BackgroundWriter() as sink:
                write = functools.partial(sink.put, writer.write)
                for name, split in splits.items():
                    lo, hi = ranges[name]
                    forward_s += extract_split(network, split, lo, hi, write, name, layers,
                                               config, device, report)  # fmt: skip
                closing = time.perf_counter()
        closed = time.perf_counter()
        stream_s = closed - streaming
    stages.done("forward", forward_s)
    stages.done("write", stream_s - forward_s)  # reading images and writing rows, beside it
    wall = time.perf_counter() - started
    total = sum(hi - lo for lo, hi in ranges.values())
    return Result(
        kind="extract",
        metrics={
            "splits": {name: hi - lo for name, (lo, hi) in ranges.items()},
            "layers": {name: spec.dim for name, spec in specs.items()},
            "same_layers": same_layers(network, layers, config.pool),
        },
        config=dataclasses.asdict(config),
        inputs=[{"path": str(config.checkpoint), "sha256": sha}],
        model=model,
        dataset=data.describe(),
        timing={
            "wall_s": wall,
            # the rate of the extraction itself: not the imports, model and data set-up before it
            "rows_per_s": total / stream_s if stream_s else None,
            "stream_s": stream_s,  # loading, forward passes and writing: wall_s less set-up
            "forward_s": forward_s,
            # the end of stream_s: the writes still queued, then flush, fsync and rename
            "close_s": closed - closing,
            "device": str(device),
            "threads": threads,
        },
    )


def _check_options(config: ExtractConfig) -> None:
    if config.pool not in POOLS:
        raise UsageError(f"--pool {config.pool!r}: expected avg or flatten")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size {config.batch_size}: must be at least 1")
    if config.workers < 0:
        raise UsageError(f"--workers {config.workers}: must be 0 or more")
    if config.limit is not None and config.limit < 1:
        raise UsageError(f"--limit {config.limit}: must be at least 1")
    if not config.splits or len(set(config.splits)) != len(config.splits):
        raise UsageError(f"--split {','.join(config.splits)}: name each split once")


def _load_data(config: ExtractConfig, meta: CheckpointMeta) -> Data:
    """The data to extract, preprocessed as the checkpoint expects (its size, mean and std)."""
    from lossxfer.data import DataSpec, load_data
    from lossxfer.inputs import accepts_any_size

    chosen = config.classes
    if chosen is None and str(DataSpec.parse(config.data)) == meta.data.get("spec"):
        chosen = tuple(meta.classes)  # the model's own task by default
    fraction = config.val_fraction
    if fraction is None:
        fraction = 0.1 if "val" in config.splits else 0.0
    data = load_data(
        config.data, chosen, fraction, config.split_seed, config.download, config.label_map
    )
    want = meta.input
    if accepts_any_size(want) or not data.source.tensor_images:
        return dataclasses.replace(data, input=want)
    if (data.input.channels, data.input.size) != (want.channels, want.size):
        raise UsageError(
            f"--data {data.spec}: {data.input.channels}-channel {data.input.size} px images, but "
            f"{config.checkpoint} expects {want.channels}-channel {want.size} px inputs"
        )
    return dataclasses.replace(data, input=want)


def same_layers(network: Network, layers: list[str], pool: str) -> dict[str, str]:
    """{last block: "penultimate"} when both are stored and are the same activations.

    A lossxfer backbone's penultimate features are its global-average-pooled last block
    (Backbone.forward), which is what `--pool avg` stores for that block too (lossxfer.layers).
    """
    import torch

    from lossxfer.nets import Backbone

    backbone = getattr(network, "backbone", None)
    if pool != "avg" or "penultimate" not in layers or not isinstance(backbone, Backbone):
        return {}
    if type(backbone).forward is not Backbone.forward:  # e.g. an imported model: no claim
        return {}
    pool_layer = backbone.pool
    pooled = isinstance(pool_layer, torch.nn.AdaptiveAvgPool2d)
    pooled = pooled and pool_layer.output_size in (1, (1, 1))
    last = backbone.layer_names()[-1]
    if not pooled or last not in layers:
        return {}
    return {last: "penultimate"}


def layer_specs(
    network: Network, layers: list[str], pool: str, spec: InputSpec, device: torch.device
) -> dict[str, LayerSpec]:
    """Width and per-sample shape of each layer, from one forward pass of a blank image."""
    import torch

    shapes: dict[str, tuple[int, ...]] = {}
    x = torch.zeros(1, spec.channels, spec.size, spec.size, device=device)
    record = lambda name, out: shapes.__setitem__(name, out.shape[1:])  # noqa: E731
    with torch.inference_mode(), hooked(network.named_layers(), layers, record):
        network(x)
    out = {}
    for name in layers:
        shape = tuple(int(s) for s in shapes[name])
        applied = pool if len(shape) > 1 else "none"
        dim = int(pool_activation(torch.zeros(1, *shape), pool).shape[1])
        out[name] = LayerSpec(dim, shape, applied)
    return out


def extract_split(
    network: Network,
    split: Split,
    lo: int,
    hi: int,
    write: Callable[..., None],
    name: str,
    layers: list[str],
    config: ExtractConfig,
    device: torch.device,
    progress: ProgressFn,
) -> float:
    """Stream rows [lo, hi) of `split` through the network into `write` (StoreWriter.write's
    arguments, queued to the writer thread); the forward seconds."""
    import torch

    dtype = {"float32": torch.float32, "float16": torch.float16}[config.dtype]
    batches = batch_iter(split, lo, hi, config.batch_size, config.workers, device)
    forward_s = 0.0
    done = 0
    progress(f"extract {name}", 0, hi - lo)
    modules = network.named_layers()
    stream = stream_rows(network, modules, layers, batches, config.pool, dtype, device)
    for start, rows, seconds in stream:
        forward_s += seconds
        n = len(rows[layers[0]])
        labels, index = split.labels[start : start + n], split.index[start : start + n]
        write(name, start - lo, labels, index, rows)
        done += n
        progress(f"extract {name}", done, hi - lo)
    return forward_s


def batch_iter(
    split: Split, lo: int, hi: int, batch_size: int, workers: int, device: torch.device
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, images) batches of rows [lo, hi), preprocessed by the split's transform.

    In-memory sources are gathered and normalised a batch at a time (no worker processes, no
    whole-split copy); file-backed ones go through a DataLoader with `workers` processes.
    """
    from torch.utils.data import DataLoader, Subset

    from lossxfer.data import _Subset
    from lossxfer.datasets import TensorImages
    from lossxfer.transforms import Normalize

    ds = split.dataset
    if (
        isinstance(ds, _Subset)
        and isinstance(ds.base, TensorImages)
        and isinstance(ds.transform, (Normalize, type(None)))
    ):
        for start in range(lo, hi, batch_size):
            images = ds.base.batch(ds.rows[start : min(start + batch_size, hi)])
            yield start, images if ds.transform is None else ds.transform(images)
        return
    loader: DataLoader[tuple[torch.Tensor, Any]] = DataLoader(
        Subset(ds, range(lo, hi)),  # type: ignore[arg-type]
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    start = lo
    for images, _ in loader:
        yield start, images
        start += len(images)


def describe_transform(dataset: Any) -> str:
    """One line naming the evaluation transform (stored as the `transform` attribute)."""
    from lossxfer.transforms import Normalize

    transform = getattr(dataset, "transform", None)
    if isinstance(transform, Normalize):
        mean, std = (
            [float(f"{v:.6g}") for v in t.flatten().tolist()]
            for t in (transform.mean, transform.std)
        )  # float32 → the decimals given
        return f"Normalize(mean={mean}, std={std})"
    return " ".join(repr(transform).split())


_STOP = object()


class _BackgroundWriter:
    """Calls made in order on one thread, at most QUEUE_DEPTH pending; errors re-raise here."""

    def __init__(self) -> None:
        self.calls: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="lossxfer-writer", daemon=True)

    def _run(self) -> None:
        while (call := self.calls.get()) is not _STOP:
            if self.error is None:
                try:
                    call[0](*call[1:])
                except BaseException as exc:
                    self.error = exc

    def put(self, fn: Callable[..., None], *args: Any) -> None:
        if self.error is not None:
            raise self.error
        self.calls.put((fn, *args))

    def __enter__(self) -> _BackgroundWriter:
        self.thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.error = self.error or RuntimeError("extraction stopped")  # skip pending writes
        self.calls.put(_STOP)
        self.thread.join()
        if exc_type is None and self.error is not None:
            raise self.error


# Root attributes that may differ between shards of one extraction.
_PER_SHARD = ("shard", "checkpoint", "lossxfer_version")


def merge_shards(
    paths: list[str], out: str, force: bool = False, progress: ProgressFn | None = None
) -> Result:
    """Concatenate the stores of `extract --shard i/N` (all N of them) in index order.

    Shards must come from one extraction: same checkpoint (by sha256), data, transform, pool,
    splits, layers, widths and dtype; shard numbers 0…N-1 each once; rows that tile every split
    in increasing `index` order. Anything else is an InputError (exit 3) naming the file.
    """
    from lossxfer.store import open_store

    started = time.perf_counter()
    check_output(out, force)
    report = progress or no_progress
    with contextlib.ExitStack() as stack:
        stores = [stack.enter_context(open_store(p)) for p in paths]
        order = _check_shards(stores)
        first = stores[0]
        attrs = {k: v for k, v in first.attrs.items() if k not in ("shard", "format",
                 "lossxfer_version")}  # fmt: skip
        splits = first.splits
        layer = first.layers(splits[0])[0]
        writer = StoreWriter(
            out, attrs, force, first.dtype(splits[0], layer), first.compression(splits[0], layer)
        )
        with writer as w:
            for split in splits:
                layers = first.layers(split)
                specs = {
                    name: LayerSpec(
                        first.dim(split, name),
                        tuple(first.layer_attrs(split, name).get("shape", ())),
                        str(first.layer_attrs(split, name).get("pool", "none")),
                    )
                    for name in layers
                }
                total = sum(s.num_rows(split) for s in stores)
                w.create_split(split, total, specs)
                done = 0
                for store in order:
                    dtype = store.dtype(split, layers[0])
                    for block in store.blocks(split, layers, dtype=dtype):
                        w.write(split, done, block.labels, block.index, block.layers)
                        done += len(block.labels)
                        report(f"merge {split}", done, total)
        rows = {split: sum(s.num_rows(split) for s in stores) for split in splits}
        widths = {name: first.dim(splits[0], name) for name in first.layers(splits[0])}
    from lossxfer.results import input_record

    return Result(
        kind="extract",
        metrics={"splits": rows, "layers": widths, "shards": len(paths)},
        config={"shards": [str(p) for p in paths], "out": str(out)},
        inputs=[input_record(p) for p in paths],
        model=attrs.get("model", {}),
        dataset=attrs.get("dataset"),
        timing={"wall_s": time.perf_counter() - started},
    )


def _check_shards(stores: list[Any]) -> list[Any]:
    """The stores in shard order, after checking they are the complete shards of one extraction."""
    import numpy as np

    first = stores[0]
    by_index: dict[int, Any] = {}
    for store in stores:
        shard = store.attrs.get("shard")
        if not isinstance(shard, dict) or {"index", "count", "split_rows"} - set(shard):
            raise InputError(f"{store.path}: not an extraction shard (made by extract --shard i/N)")
        if shard["index"] in by_index:
            other = by_index[shard["index"]].path
            raise InputError(f"{store.path}: shard {shard['index']} is given twice (also {other})")
        by_index[shard["index"]] = store
        ref, this = first.attrs, store.attrs
        for key in sorted((set(ref) | set(this)) - set(_PER_SHARD)):
            if ref.get(key) != this.get(key):
                raise InputError(
                    f"{store.path}: {key} differs from {first.path}'s; shards of different "
                    "extractions cannot be merged"
                )
        for key in ("count", "split_rows"):
            if shard[key] != ref["shard"][key]:
                raise InputError(f"{store.path}: shard {key} differs from {first.path}'s")
        if store.splits != first.splits:
            raise InputError(f"{store.path}: splits {store.splits} differ from {first.path}'s")
        for split in first.splits:
            mine = [(n, store.dim(split, n), store.dtype(split, n)) for n in store.layers(split)]
            theirs = [(n, first.dim(split, n), first.dtype(split, n)) for n in first.layers(split)]
            if mine != theirs:
                raise InputError(
                    f"{store.path}: split {split!r} has layers {mine}, {first.path} has {theirs}"
                )
    count = first.attrs["shard"]["count"]
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        names = ", ".join(f"{i}/{count}" for i in missing)
        raise InputError(f"{first.path}: cannot merge without shard(s) {names}")
    order = [by_index[i] for i in range(count)]
    for split in first.splits:
        index = np.concatenate([s.index(split) for s in order])
        expected = first.attrs["shard"]["split_rows"].get(split)
        if len(index) != expected or np.any(np.diff(index) <= 0):
            raise InputError(
                f"{first.path}: the shards' rows of split {split!r} overlap or leave gaps "
                f"({len(index)} rows, expected {expected} in increasing index order)"
            )
    return order
