"""The HDF5 activation store (docs/formats.md): one file per (checkpoint, dataset).

Layout: root attrs describe provenance; `/<split>/labels` and `/<split>/index` (int64, N) and one
`/<split>/<layer>` dataset (N × D, float32 or float16, chunked by rows) per layer. Writers stream
row blocks into a temporary file that is renamed only when complete; readers stream aligned row
blocks so nothing needs a whole layer in memory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lossxfer import __version__
from lossxfer.errors import InputError, LossxferError, UsageError
from lossxfer.formats import ACTIVATIONS, check_format
from lossxfer.fsio import atomic_path, require_file
from lossxfer.registry import check_choice

if TYPE_CHECKING:
    import h5py
    import numpy as np

SPLITS = ("train", "val", "test")
DTYPES = ("float32", "float16")  # of stored layers
COMPRESSIONS = ("lzf", "gzip")
_JSON_ATTRS = ("model", "dataset", "objective_opts", "shard")  # root attributes holding objects
_META = ("labels", "index")
ROW_CHUNK_BYTES = 1 << 20  # about 1 MiB per chunk
WRITE_CACHE_BYTES = 4 * ROW_CHUNK_BYTES  # per dataset being written


@dataclass
class Block:
    """Rows [start, start + len(labels)) of one split, aligned across layers."""

    start: int
    labels: np.ndarray
    index: np.ndarray
    layers: dict[str, np.ndarray]


@dataclass(frozen=True)
class LayerSpec:
    """A layer to store: its row width, the original (per-sample) shape and the pooling applied."""

    dim: int
    shape: tuple[int, ...]
    pool: str


class StoreWriter:
    """Create a store atomically.

    with StoreWriter(path, attrs, force=...) as w:
        w.create_split("test", n, {"penultimate": LayerSpec(...)})
        w.write("test", start, labels, index, {"penultimate": rows})
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        attrs: Mapping[str, Any],
        force: bool = False,
        dtype: str = "float32",
        compression: str | None = None,
    ) -> None:
        check_choice("dtype", dtype, DTYPES)
        if compression is not None:
            check_choice("compression", compression, COMPRESSIONS)
        self.path = Path(path)
        self.attrs = dict(attrs)
        self.force = force
        self.dtype = dtype
        self.compression = compression
        self._stack = contextlib.ExitStack()
        self._file: h5py.File | None = None
        self._written: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        # Open handles of every dataset: a temporary handle would flush its chunk cache when
        # garbage-collected, where a write error (disk full) is lost (and HDF5 may crash).
        self._datasets: dict[tuple[str, str], h5py.Dataset] = {}
        self._tmp: Path | None = None
        self._needed = 0  # bytes of the data of the splits created so far

    def __enter__(self) -> StoreWriter:
        import h5py

        tmp = self._tmp = self._stack.enter_context(atomic_path(self.path, self.force))
        try:
            # A chunk cache of a few chunks per dataset: HDF5's default (1 MiB) cannot hold one
            # ~1 MiB chunk, so each row block would be written through (3× slower).
            file = h5py.File(tmp, "w", libver="latest", rdcc_nbytes=WRITE_CACHE_BYTES)
            self._file = self._stack.enter_context(file)
            root = self._file.attrs
            root["format"] = ACTIVATIONS
            root["lossxfer_version"] = __version__
            for key, value in self.attrs.items():
                root[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
        except BaseException as exc:  # __exit__ will not run: clean up (atomic_path maps OSError)
            if not self._stack.__exit__(type(exc), exc, exc.__traceback__):
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            short = {
                s: (w, self._sizes[s]) for s, w in self._written.items() if w != self._sizes[s]
            }
            if short:
                exc = RuntimeError(f"store {self.path}: splits not fully written: {short}")
        if exc is None:
            try:
                self.file.flush()  # the last chunks: a full disk must show here
            except (OSError, RuntimeError) as err:
                exc = _write_error(err)
        if exc is None:
            self._datasets.clear()
            self._stack.close()
            return
        with _quiet_destructors():
            if self._tmp is not None:  # free the space first, so that HDF5's closes succeed
                with contextlib.suppress(OSError):
                    os.truncate(self._tmp, 0)
            self._datasets.clear()
            with contextlib.suppress(Exception):
                self.file.close()  # every handle, now: HDF5 must not retry failed writes later
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
        if exc_type is None:
            raise exc

    @property
    def file(self) -> h5py.File:
        if self._file is None:
            raise RuntimeError("StoreWriter used outside its `with` block")
        return self._file

    def create_split(self, split: str, n: int, layers: Mapping[str, LayerSpec]) -> None:
        group = self.file.create_group(split)
        rows = max(1, min(n, 4096))
        for meta in _META:
            self._datasets[split, meta] = group.create_dataset(
                meta, shape=(n,), dtype="int64", chunks=(rows,) if n else None
            )
        itemsize = 2 if self.dtype == "float16" else 4
        for name, spec in layers.items():
            if name in _META:
                raise UsageError(f"layer name {name!r} is reserved")
            chunk_rows = max(1, min(n, ROW_CHUNK_BYTES // max(1, spec.dim * itemsize)))
            ds = group.create_dataset(
                name,
                shape=(n, spec.dim),
                dtype=self.dtype,
                chunks=(chunk_rows, spec.dim) if n else None,
                compression=self.compression,
            )
            ds.attrs["shape"] = list(spec.shape)
            ds.attrs["pool"] = spec.pool
            self._datasets[split, name] = ds
        group.attrs["layer_order"] = json.dumps(list(layers))
        self._written[split] = 0
        self._sizes[split] = n
        self._needed += n * (16 + itemsize * sum(spec.dim for spec in layers.values()))
        self._check_space()

    def _check_space(self) -> None:
        """Refuse before writing when the uncompressed store cannot fit: HDF5 reports a full
        disk only when it flushes, and cannot always close the file cleanly after that."""
        if self.compression is not None or self._tmp is None:
            return
        try:
            free = shutil.disk_usage(self._tmp.parent).free + self._tmp.stat().st_size
        except OSError:
            return
        if self._needed > free:
            raise LossxferError(
                f"{self.path}: no space left on device (the store needs about "
                f"{self._needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free); nothing was "
                "written"
            )

    def write(
        self,
        split: str,
        start: int,
        labels: np.ndarray,
        index: np.ndarray,
        layers: Mapping[str, np.ndarray],
    ) -> None:
        for name, rows in {"labels": labels, "index": index, **layers}.items():
            _write_rows(self._datasets[split, name], start, rows, len(labels))
        self._written[split] += len(labels)


def _write_rows(ds: h5py.Dataset, start: int, rows: np.ndarray, count: int) -> None:
    """`ds[start : start + count] = rows` through h5py's low-level API: the same write,
    without the ~70 µs of Python that slicing spends on each call (extract makes one per layer
    and batch, on a thread that shares the GIL with the forward passes)."""
    import numpy as np
    from h5py import h5s

    rows = np.asarray(rows)
    shape = (count, *ds.shape[1:])
    if rows.shape != shape or start < 0 or start + count > ds.shape[0]:
        raise ValueError(
            f"{ds.name}: rows of shape {rows.shape} at row {start} do not fit; expected {shape} "
            f"within its {ds.shape[0]} rows"
        )
    if count == 0:
        return
    rows = np.ascontiguousarray(rows, dtype=ds.dtype)  # a view when it already is
    space = ds.id.get_space()
    space.select_hyperslab((start, *(0 for _ in shape[1:])), shape)
    ds.id.write(h5s.create_simple(shape), space, rows)


def _write_error(err: BaseException) -> OSError:
    """h5py's error of a failed write or flush, as the OSError (errno kept) atomic_path maps."""
    if isinstance(err, OSError) and err.errno is not None:
        return err
    text = str(err)
    code = errno.ENOSPC if "errno = 28" in text or "No space left" in text else errno.EIO
    return OSError(code, text.splitlines()[0] if text else type(err).__name__)


@contextlib.contextmanager
def _quiet_destructors() -> Iterator[None]:
    """h5py reports errors of handles closed after a failed write (disk full) as tracebacks
    (sys.excepthook) and 'Exception ignored' (sys.unraisablehook); the error is raised once."""
    previous = sys.unraisablehook, sys.excepthook
    sys.unraisablehook = lambda _info: None
    sys.excepthook = lambda *_args: None
    try:
        yield
    finally:
        sys.unraisablehook, sys.excepthook = previous


class Store:
    """Read-only view of an activation store; validates the file as it opens it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import h5py

        self.path = require_file(path)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError:
            raise InputError(f"{self.path}: not an HDF5 activation store") from None
        try:
            self._validate()
        except BaseException:
            self._file.close()
            raise

    def _validate(self) -> None:
        import h5py

        check_format(self._file.attrs.get("format"), ACTIVATIONS, self.path)
        for name in self._file:
            if not isinstance(self._file.get(name, getlink=True), h5py.HardLink):
                raise InputError(f"{self.path}: /{name} is a link to elsewhere; refused")
        if not self.splits:
            raise InputError(f"{self.path}: store holds no splits")
        for split in self.splits:
            group = self._file[split]
            for name in group:
                link = group.get(name, getlink=True)
                if not isinstance(link, h5py.HardLink):
                    raise InputError(f"{self.path}: /{split}/{name} is a link; refused")
                ds = group[name]
                if not isinstance(ds, h5py.Dataset):
                    raise InputError(f"{self.path}: /{split}/{name} is not a dataset")
                if ds.is_virtual or ds.external:
                    raise InputError(f"{self.path}: /{split}/{name} refers to other files; refused")
            for meta in _META:
                if meta not in group:
                    raise InputError(f"{self.path}: split {split!r} has no {meta!r}")
                ds = group[meta]
                if ds.ndim != 1 or ds.dtype.kind not in "iu":
                    raise InputError(f"{self.path}: /{split}/{meta} must be a 1-d integer array")
            n = group["labels"].shape[0]
            if group["index"].shape[0] != n:
                raise InputError(f"{self.path}: split {split!r}: labels and index differ in length")
            for layer in self.layers(split):
                ds = group[layer]
                if ds.ndim != 2 or ds.dtype.kind != "f":
                    raise InputError(
                        f"{self.path}: /{split}/{layer} must be a 2-d float array, "
                        f"found {ds.dtype} with shape {ds.shape}"
                    )
                if ds.shape[0] != n:
                    raise InputError(
                        f"{self.path}: /{split}/{layer} has {ds.shape[0]} rows but the split has "
                        f"{n} labels"
                    )
        self.attrs  # noqa: B018  (decodes the JSON attributes: a malformed one fails here, not late)

    # -- description --------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes, JSON-valued ones decoded.

        The JSON objects of the format (`model`, `dataset`, `objective_opts`, `shard`) must
        decode to objects; any other text is data, kept as written when it is not JSON (an
        objective named "{x}" is a name, not a broken document)."""
        out: dict[str, Any] = {}
        for key, value in self._file.attrs.items():
            if isinstance(value, bytes):
                value = value.decode(errors="replace")
            if key in _JSON_ATTRS:
                try:
                    value = json.loads(value) if isinstance(value, str) else value
                except json.JSONDecodeError:
                    raise InputError(f"{self.path}: attribute {key!r} is not valid JSON") from None
                if value is not None and not isinstance(value, dict):
                    raise InputError(f"{self.path}: attribute {key!r} must be a JSON object")
            elif isinstance(value, str) and value[:1] in "[{":
                with contextlib.suppress(json.JSONDecodeError):
                    value = json.loads(value)
            elif hasattr(value, "item") and getattr(value, "size", 1) == 1:
                value = value.item()
            elif hasattr(value, "tolist"):
                value = value.tolist()
            out[key] = value
        return out

    @property
    def splits(self) -> list[str]:
        import h5py

        groups = [k for k in self._file if self._file.get(k, getclass=True) is h5py.Group]
        return sorted(groups, key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))

    def layers(self, split: str) -> list[str]:
        group = self._group(split)
        names = [k for k in group if k not in _META]
        order = group.attrs.get("layer_order")
        if order is not None:
            ranked = {name: i for i, name in enumerate(json.loads(order))}
            names.sort(key=lambda k: ranked.get(k, len(ranked)))
        return names

    def num_rows(self, split: str) -> int:
        return int(self._group(split)["labels"].shape[0])

    def dim(self, split: str, layer: str) -> int:
        return int(self._dataset(split, layer).shape[1])

    def dtype(self, split: str, layer: str) -> str:
        return str(self._dataset(split, layer).dtype)

    def compression(self, split: str, layer: str) -> str | None:
        value = self._dataset(split, layer).compression
        return str(value) if value else None

    def layer_attrs(self, split: str, layer: str) -> dict[str, Any]:
        ds = self._dataset(split, layer)
        return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in ds.attrs.items()}

    # -- data ---------------------------------------------------------------------------------
    def labels(self, split: str) -> np.ndarray:
        return self._checked_labels(split, self._group(split)["labels"][...].astype("int64"), 0)

    def index(self, split: str) -> np.ndarray:
        return self._group(split)["index"][...].astype("int64")

    def read(self, split: str, layer: str, dtype: str = "float32") -> np.ndarray:
        """A whole layer in memory (use `blocks` to stream instead)."""
        rows = self._dataset(split, layer)[...].astype(dtype, copy=False)
        return self._checked_rows(split, layer, rows, 0)

    def blocks(
        self,
        split: str,
        layers: Sequence[str],
        block_rows: int = 4096,
        start: int = 0,
        stop: int | None = None,
        dtype: str = "float32",
    ) -> Iterator[Block]:
        """Aligned row blocks of `layers` (and labels, index) over rows [start, stop)."""
        if block_rows < 1:
            raise UsageError(f"block size must be at least 1, got {block_rows}")
        group = self._group(split)
        datasets = {name: self._dataset(split, name) for name in layers}
        stop = self.num_rows(split) if stop is None else stop
        for lo in range(start, stop, block_rows):
            hi = min(lo + block_rows, stop)
            yield Block(
                start=lo,
                labels=self._checked_labels(split, group["labels"][lo:hi].astype("int64"), lo),
                index=group["index"][lo:hi].astype("int64"),
                layers={
                    k: self._checked_rows(split, k, ds[lo:hi].astype(dtype, copy=False), lo)
                    for k, ds in datasets.items()
                },
            )

    def _checked_rows(self, split: str, layer: str, rows: np.ndarray, start: int) -> np.ndarray:
        """NaN or infinity would silently poison every statistic: refuse them (exit 3)."""
        import numpy as np

        finite = np.isfinite(rows)
        if not finite.all():
            row = start + int(np.argwhere(~finite)[0][0])
            raise InputError(
                f"{self.path}: /{split}/{layer} row {row} is not finite (non-finite value: NaN or "
                "infinity)"
            )
        return rows

    def _checked_labels(self, split: str, labels: np.ndarray, start: int) -> np.ndarray:
        """Labels are class positions 0..K-1; a negative one (e.g. an 'unlabelled' -1) is not."""
        if labels.size and labels.min() < 0:
            row = start + int(labels.argmin())
            raise InputError(
                f"{self.path}: /{split}/labels row {row} is {labels[row - start]}; labels must be "
                "class positions ≥ 0"
            )
        return labels

    def _group(self, split: str) -> h5py.Group:
        if split not in self.splits:
            raise InputError(
                f"{self.path}: no split {split!r}; the store has {', '.join(self.splits)}"
            )
        return self._file[split]

    def _dataset(self, split: str, layer: str) -> h5py.Dataset:
        group = self._group(split)
        if layer in _META or layer not in group:
            # A layer name is an option value: a typo is a usage error (exit 2) with a
            # did-you-mean, as in `extract --layers`, in every verb that reads stores.
            try:
                check_choice("layer", layer, self.layers(split))
            except UsageError as exc:
                raise UsageError(f"{self.path}: split {split!r}: {exc}") from None
        return group[layer]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: str | os.PathLike[str]) -> Store:
    """Open and validate a store; any problem is an InputError (exit 3) naming the file."""
    try:
        return Store(path)
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise InputError(f"{path}: unreadable activation store ({exc})") from None


def check_aligned(a: Store, b: Store, split: str) -> None:
    """Two stores must hold the same samples in the same order (compared by `index`)."""
    import numpy as np

    ia, ib = a.index(split), b.index(split)
    if ia.shape != ib.shape or not np.array_equal(ia, ib):
        raise InputError(
            f"{a.path} and {b.path}: split {split!r} holds different samples "
            f"({len(ia)} vs {len(ib)} rows, index differs); extract both from the same data"
        )
