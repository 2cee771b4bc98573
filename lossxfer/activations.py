"""Activations of named layers: the one path from image batches to pooled rows.

`lossxfer extract` (checkpoint → store) and `extract_features` (any torch module → arrays or a
store) both run `stream_rows`: inference mode, a forward hook per requested layer that pools
its output (global average over the spatial axes, or flatten; docs/method.md §3) and casts it
on the device, and a background thread preparing the next batch while the network runs.

Layers are named as the model names them: lossxfer networks (and wrapped zoo models) have
`named_layers()` (`stem`, `block1`…`blockN`, `penultimate`, `logits`); every model also has
the module paths of `named_modules()` (`layer4.2.relu`, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from lossxfer.errors import InputError, UsageError
from lossxfer.progress import ProgressFn, no_progress
from lossxfer.registry import check_choice, unknown_name_message

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from lossxfer.results import Result

POOLS = ("avg", "flatten")
QUEUE_DEPTH = 2  # batches in flight per hand-over: enough to overlap, bounded memory
K = TypeVar("K")


def layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The model's named layers (if it has `named_layers()`), then its module paths."""
    named: dict[str, nn.Module] = dict(getattr(model, "named_layers", dict)())
    return {**named, **{n: m for n, m in model.named_modules() if n and n not in named}}


def resolve_layers(choices: list[str], requested: Iterable[str], listed: list[str]) -> list[str]:
    """`requested` in model order; `all` = every name in `listed` (the named layers); an unknown
    or repeated name is a UsageError whose did-you-mean looks in `listed` (else `choices`)."""
    requested = list(requested)
    if "all" in requested:
        if not listed:
            raise UsageError("layers 'all': the model has no named layers; name its modules")
        return listed
    for name in requested:
        if name not in choices:
            raise UsageError(unknown_name_message("layer", name, listed or choices))
    if len(set(requested)) != len(requested):
        raise UsageError(f"--layers {','.join(requested)}: a layer is named twice")
    if not requested:
        raise UsageError("no layers requested")
    return [n for n in choices if n in requested]


def pool_activation(output: torch.Tensor, pool: str) -> torch.Tensor:
    """N × C × H × W → N × C (avg) or N × CHW (flatten); N × D unchanged. Always a new tensor.

    A 3-D output is a transformer's token sequence N × T × D (channels last, as every timm
    block gives it): avg is the mean over the T tokens (class token included), → N × D."""
    if output.ndim == 2:
        return output.clone()
    if pool == "avg":
        return output.mean(dim=1 if output.ndim == 3 else tuple(range(2, output.ndim)))
    return output.flatten(1).clone()


@contextlib.contextmanager
def hooked(
    modules: Mapping[str, nn.Module], layers: list[str], fn: Callable[[str, torch.Tensor], None]
) -> Iterator[None]:
    """Forward hooks on `modules[layer]` calling `fn(layer, output)`; removed on exit, always."""
    import torch

    def hook(name: str, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            raise UsageError(f"layer {name!r} outputs a {type(output).__name__}, not a tensor")
        fn(name, output.detach())

    handles = [
        modules[name].register_forward_hook(lambda _m, _i, out, name=name: hook(name, out))
        for name in layers
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def stream_rows(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    layers: list[str],
    batches: Iterator[tuple[K, torch.Tensor]],
    pool: str,
    dtype: torch.dtype,
    device: torch.device,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> Iterator[tuple[K, dict[str, np.ndarray], float]]:
    """(key, {layer: pooled rows}, forward seconds) per (key, images) batch, in order; `shapes`
    collects each layer's per-sample output shape. The model must be in eval mode."""
    import torch

    captured: dict[str, torch.Tensor] = {}

    def capture(layer: str, output: torch.Tensor) -> None:
        if shapes is not None:
            shapes.setdefault(layer, tuple(int(s) for s in output.shape[1:]))
        captured[layer] = pool_activation(output, pool).to(dtype)

    with torch.inference_mode(), hooked(modules, layers, capture), _Background(batches) as ready:
        for key, images in ready:
            tick = time.perf_counter()
            model(images.to(device, non_blocking=True))
            missing = [layer for layer in layers if layer not in captured]
            if missing:
                raise UsageError(f"layer {missing[0]!r} did not run in the model's forward pass")
            rows = {layer: captured.pop(layer).cpu().numpy() for layer in layers}
            yield key, rows, time.perf_counter() - tick


@dataclasses.dataclass
class Activations:
    """Pooled rows per layer (rows × width, batch order) and the batches' labels (or None)."""

    layers: dict[str, np.ndarray]
    labels: np.ndarray | None

    def __getitem__(self, layer: str) -> np.ndarray:
        return self.layers[layer]


Batches = Iterable[Any]  # of image tensors, or (images, labels, ...) tuples as DataLoaders give


@overload
def extract_features(
    model: nn.Module,
    batches: Batches,
    layers: Iterable[str],
    pool: str = "avg",
    out: None = None,
    *,
    dtype: str = "float32",
    device: str | torch.device | None = None,
    rows: Mapping[str, int] | None = None,
    force: bool = False,
    progress: ProgressFn = no_progress,
) -> Activations: ...


@overload
def extract_features(
    model: nn.Module,
    batches: Batches | Mapping[str, Batches],
    layers: Iterable[str],
    pool: str = "avg",
    *,
    out: str | os.PathLike[str],
    dtype: str = "float32",
    device: str | torch.device | None = None,
    rows: Mapping[str, int] | None = None,
    force: bool = False,
    progress: ProgressFn = no_progress,
) -> Result: ...


def extract_features(
    model: nn.Module,
    batches: Batches | Mapping[str, Batches],
    layers: Iterable[str],
    pool: str = "avg",
    out: str | os.PathLike[str] | None = None,
    *,
    dtype: str = "float32",
    device: str | torch.device | None = None,
    rows: Mapping[str, int] | None = None,
    force: bool = False,
    progress: ProgressFn = no_progress,
) -> Activations | Result:
    """Activations of `layers` of any torch module, as `lossxfer extract` computes them.

    Without `out`: the rows of every batch as arrays (`Activations`). With `out`: an activation
    store, streamed; `batches` is then one iterable (the `train` split) or {split: iterable},
    every batch must carry labels, and each split's row count comes from `rows` or from
    `len(batches.dataset)` (a DataLoader). The model runs in eval mode on `device` (default:
    where its parameters are) and is left as it was found.
    """
    import torch

    check_choice("pool", pool, POOLS)
    check_choice("dtype", dtype, ["float32", "float16"])
    modules = layer_modules(model)
    listed = list(dict(getattr(model, "named_layers", dict)()))
    names = resolve_layers(list(modules), layers, listed)
    first = next(model.parameters(), None)
    here = first.device if first is not None else torch.device("cpu")
    target = torch.device(device) if device is not None else here
    cast = {"float32": torch.float32, "float16": torch.float16}[dtype]
    was_training = model.training
    model.eval().to(target)
    try:
        if out is None:
            if isinstance(batches, Mapping):
                raise UsageError("arrays come from one iterable of batches; a dict needs out=")
            return _collect(model, modules, names, batches, pool, cast, target, progress)
        splits = batches if isinstance(batches, Mapping) else {"train": batches}
        return _write(model, modules, names, splits, pool, cast, target, out, dtype, rows or {},
                      force, progress)  # fmt: skip
    finally:
        model.train(was_training).to(here)


def _images(batch: Any) -> tuple[Any, torch.Tensor]:
    """(labels or None, images) of a tensor or an (images, labels, ...) batch."""
    import torch

    if isinstance(batch, torch.Tensor):
        return None, batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return (batch[1] if len(batch) > 1 else None), batch[0]
    raise InputError(f"a batch must be a tensor or (images, labels), got {type(batch).__name__}")


def _collect(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    names: list[str],
    batches: Batches,
    pool: str,
    dtype: torch.dtype,
    device: torch.device,
    progress: ProgressFn,
) -> Activations:
    import numpy as np

    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    labels: list[np.ndarray] = []
    done = 0
    pairs = (_images(b) for b in batches)
    for y, block, _ in stream_rows(model, modules, names, pairs, pool, dtype, device):
        for name in names:
            parts[name].append(block[name])
        if y is not None:
            labels.append(np.asarray(y.cpu() if hasattr(y, "cpu") else y))
        done += len(block[names[0]])
        progress("extract", done, done)
    if not done:
        raise InputError("no batches: nothing to extract")
    if labels and len(labels) != len(parts[names[0]]):
        raise InputError("some batches carry labels and some do not")
    return Activations(
        {name: np.concatenate(p) for name, p in parts.items()},
        np.concatenate(labels) if labels else None,
    )


def _write(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    names: list[str],
    splits: Mapping[str, Batches],
    pool: str,
    dtype: torch.dtype,
    device: torch.device,
    out: str | os.PathLike[str],
    store_dtype: str,
    rows: Mapping[str, int],
    force: bool,
    progress: ProgressFn,
) -> Result:
    import numpy as np

    from lossxfer.fsio import check_output
    from lossxfer.results import Result
    from lossxfer.store import LayerSpec, StoreWriter

    started = time.perf_counter()
    check_output(out, force)
    sizes = {}
    for split, batches in splits.items():
        size = rows.get(split, _dataset_len(batches))
        if size is None:
            raise UsageError(f"split {split!r}: give rows={{{split!r}: N}} to write a store")
        sizes[split] = size
    widths: dict[str, int] = {}
    attrs = {"pool": pool, "model": {}, "source": type(model).__name__}
    with StoreWriter(out, attrs, force, store_dtype) as writer:
        for split, batches in splits.items():
            shapes: dict[str, tuple[int, ...]] = {}
            done = 0
            pairs = (_images(b) for b in batches)
            for y, block, _ in stream_rows(
                model, modules, names, pairs, pool, dtype, device, shapes
            ):
                n = len(block[names[0]])
                if y is None:
                    raise InputError(f"split {split!r}: a store needs labels: (images, labels)")
                if done + n > sizes[split]:
                    raise InputError(f"split {split!r}: more than the {sizes[split]} rows given")
                if done == 0:
                    specs = {
                        name: LayerSpec(block[name].shape[1], shapes[name], pool
                                        if len(shapes[name]) > 1 else "none")
                        for name in names
                    }  # fmt: skip
                    writer.create_split(split, sizes[split], specs)
                    widths.update({name: spec.dim for name, spec in specs.items()})
                labels = np.asarray(y.cpu() if hasattr(y, "cpu") else y, dtype=np.int64)
                writer.write(split, done, labels, np.arange(done, done + n), block)
                done += n
                progress(f"extract {split}", done, sizes[split])
            if done != sizes[split]:
                raise InputError(f"split {split!r}: {done} rows, not the {sizes[split]} given")
    return Result(
        kind="extract",
        metrics={"splits": sizes, "layers": widths},
        config={"layers": names, "pool": pool, "dtype": store_dtype, "out": os.fspath(out)},
        timing={"wall_s": time.perf_counter() - started},
    )


def _dataset_len(batches: Batches) -> int | None:
    dataset = getattr(batches, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


_DONE = object()


class _Background:
    """Run an iterator in a thread, QUEUE_DEPTH items ahead; its errors re-raise in the reader."""

    def __init__(self, source: Iterator[Any]) -> None:
        self.source = source
        self.items: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lossxfer-prefetch", daemon=True)

    def _run(self) -> None:
        try:
            for item in self.source:
                while not self.stop.is_set():
                    try:
                        self.items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
            self.items.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            self.items.put(exc)

    def __enter__(self) -> Iterator[Any]:
        self.thread.start()
        return self._iterate()

    def _iterate(self) -> Iterator[Any]:
        while True:
            item = self.items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        while self.thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                self.items.get_nowait()
            self.thread.join(0.01)  # not a blocking get: a finished producer puts nothing more
