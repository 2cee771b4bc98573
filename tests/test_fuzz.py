"""Fuzzing the readers: mutated checkpoints, stores, CKA shards and result records either load
as a valid object or raise a LossxferError — never another exception, a hang or a crash.

Mutations are byte-level (overwrite bytes, biased towards headers and metadata; truncate) and
structural (metadata values and their types replaced, datasets given other dtypes and shapes,
JSON fields replaced by other JSON). HDF5 is a C library: store examples run in a forked child,
so that a crash is seen as a signal and a hang as a timeout. Hypothesis runs derandomized with a
fixed example budget per reader, so CI is reproducible and bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossxfer.checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    verify_checkpoint,
)
from lossxfer.errors import InputError, LossxferError
from lossxfer.inputs import InputSpec
from lossxfer.models import build_network
from lossxfer.objectives import make_objective
from lossxfer.results import Result, load_result
from lossxfer.store import LayerSpec, StoreWriter, open_store

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEW = settings(FUZZ, max_examples=25)
MANY = settings(FUZZ, max_examples=120)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


# ---------------------------------------------------------------------------------------------
# Valid files to mutate


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    spec = InputSpec(1, 8, (0.5,), (0.29,))
    objective = make_objective("cosine_softmax", {})
    network = build_network("smallcnn", spec, objective, 3)
    meta = CheckpointMeta(
        arch="smallcnn",
        objective="cosine_softmax",
        objective_opts=objective.options(),
        num_classes=3,
        classes=[0, 1, 2],
        input=spec,
        data={"spec": "synthetic:classes=3", "classes": [0, 1, 2], "label": "synthetic"},
        seed=0,
        config={"epochs": 1},
        metrics={"test_top1": 0.5},
    )
    ckpt = save_checkpoint(root / "model.safetensors", network, meta)
    store = root / "acts.h5"
    rng = np.random.default_rng(0)
    dataset = {"spec": "synthetic", "classes": [0, 1, 2], "label": "synthetic"}
    attrs = {"arch": "smallcnn", "objective": "softmax", "model": {"seed": 0}, "dataset": dataset}
    with StoreWriter(store, attrs) as w:
        for split, n in (("train", 30), ("test", 12)):
            w.create_split(split, n, {"a": LayerSpec(5, (5,), "none"),
                                      "b": LayerSpec(3, (3, 1, 1), "avg")})  # fmt: skip
            w.write(split, 0, np.arange(n) % 3, np.arange(n),
                    {"a": rng.normal(size=(n, 5)).astype("float32"),
                     "b": rng.normal(size=(n, 3)).astype("float32")})  # fmt: skip
    record = Result(
        kind="separation",
        metrics={"split": "test", "layers": {"a": {"r2": 0.5, "d_within": 0.2, "nc1": None}}},
        config={"store": str(store), "layers": ["a"]},
        inputs=[{"path": str(store), "sha256": "0" * 64}],
        model={"arch": "smallcnn", "objective": "softmax", "objective_opts": {}, "seed": 0,
               "data": {"spec": "synthetic", "label": "synthetic"}, "checkpoint_sha256": "0"},
        dataset={"spec": "synthetic", "label": "synthetic"},
        timing={"wall_s": 0.1},
    ).write(root / "sep.json")  # fmt: skip
    from lossxfer.similarity import CkaConfig, compute_shard, write_shard

    shards = [
        write_shard(
            compute_shard(CkaConfig(str(store), backend="numpy", shard=(i, 2))),
            root / f"part{i}.h5",
        )
        for i in (0, 1)
    ]
    return {"ckpt": ckpt, "store": store, "record": record, "shard": shards[0],
            "shard1": shards[1], "root": root}  # fmt: skip


def work(files: dict[str, Path], name: str) -> Path:
    folder = files["root"] / "work"
    folder.mkdir(exist_ok=True)
    return folder / name


# ---------------------------------------------------------------------------------------------
# Running a reader: the outcome, in this process or in a forked child


def outcome(read: Callable[[Path], object], path: Path) -> str:
    try:
        read(path)
    except LossxferError:
        return "lossxfer error"
    except Exception as exc:
        return f"other: {type(exc).__name__}: {exc}"
    return "ok"


def isolated(read: Callable[[Path], object], path: Path, timeout: float = 30.0) -> str:
    """`outcome` in a forked child: a crash is 'crash: SIGNAL', a hang 'hang'."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)  # HDF5 may print its error stack
            text = outcome(read, path)
        except BaseException as exc:
            text = f"other: {type(exc).__name__}"
        os.write(w, text.encode()[:2000])
        os._exit(0)
    os.close(w)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return "hang"
        time.sleep(0.002)
    text = os.read(r, 4000).decode(errors="replace")
    os.close(r)
    if os.WIFSIGNALED(status):
        return f"crash: {signal.Signals(os.WTERMSIG(status)).name}"
    return text


def accepted(result: str) -> bool:
    return result in ("ok", "lossxfer error")


SEEN: Counter[str] = Counter()  # outcomes of the current test's examples


def check(result: str, what: str) -> None:
    SEEN[result if accepted(result) else "bad"] += 1
    assert accepted(result), what


@pytest.fixture(autouse=True)
def reaches_error_paths() -> Iterator[None]:
    """Per test (all its examples): the mutations must reach the readers' error paths, else the
    fuzz proves nothing. Counts go to the log: `pytest -s` shows them."""
    SEEN.clear()
    yield
    print(f"fuzz outcomes: {dict(SEEN)}")
    assert SEEN["lossxfer error"], f"the fuzz never reached an error path: {dict(SEEN)}"


# ---------------------------------------------------------------------------------------------
# Mutations


def overwrite(data: bytes, edits: list[tuple[float, int]], hot: int) -> bytes:
    """Set bytes; positions are fractions: below 0.7 they fall in the first `hot` bytes."""
    out = bytearray(data)
    for where, value in edits:
        pos = int(where / 0.7 * hot) if where < 0.7 else int((where - 0.7) / 0.3 * len(out))
        out[min(pos, len(out) - 1)] = value
    return bytes(out)


byte_edits = st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def header_length(path: Path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def read_all_store(path: Path) -> None:
    with open_store(path) as store:
        store.attrs  # noqa: B018
        for split in store.splits:
            layers = store.layers(split)
            for layer in layers:
                store.dim(split, layer)
                store.dtype(split, layer)
                store.layer_attrs(split, layer)
            store.labels(split)
            store.index(split)
            for _ in store.blocks(split, layers, block_rows=7):
                pass


def describe(path: Path) -> None:
    from lossxfer.info import describe as info

    info(path)


# ---------------------------------------------------------------------------------------------
# Checkpoints


@FUZZ
@given(edits=byte_edits, cut=st.one_of(st.none(), st.floats(0, 1)))
def test_checkpoint_bytes(files: dict[str, Path], edits: list, cut: float | None) -> None:
    src = files["ckpt"]
    data = overwrite(src.read_bytes(), edits, header_length(src))
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = work(files, "ckpt.safetensors")
    path.write_bytes(data)
    for read in (read_metadata, verify_checkpoint, load_checkpoint, describe):
        result = outcome(read, path)
        check(result, f"{read.__name__}: {result}")


def rewrite_header(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit the safetensors JSON header (metadata, dtypes, shapes, offsets) and keep the data."""
    raw = src.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    text = json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


META_KEYS = [
    *("format", "arch", "objective", "objective_opts", "num_classes", "classes", "input"),
    *("data", "seed", "config", "metrics", "extra", "lossxfer_version", "created"),
]


@MANY
@given(
    key=st.sampled_from(META_KEYS),
    value=st.one_of(json_values.map(json.dumps), st.text(max_size=30), json_values),
    drop=st.booleans(),
)
def test_checkpoint_metadata_values_and_types(
    files: dict[str, Path], key: str, value: Any, drop: bool
) -> None:
    def edit(header: dict[str, Any]) -> None:
        meta = header["__metadata__"]
        if drop:
            meta.pop(key, None)
        else:
            meta[key] = value  # safetensors wants strings; a non-string must be refused too

    path = work(files, "meta.safetensors")
    rewrite_header(files["ckpt"], path, edit)
    for read in (read_metadata, verify_checkpoint, load_checkpoint, describe):
        result = outcome(read, path)
        check(result, f"{read.__name__} with {key}={value!r}: {result}")


@FUZZ
@given(
    which=st.integers(0, 100),
    field=st.sampled_from(["dtype", "shape", "data_offsets"]),
    value=st.one_of(
        st.sampled_from(["F16", "F64", "I64", "U8", "BOOL", "BF16", "XX"]),
        st.lists(st.integers(-5, 2**40), max_size=5),
        json_values,
    ),
)
def test_checkpoint_tensor_entries(
    files: dict[str, Path], which: int, field: str, value: Any
) -> None:
    def edit(header: dict[str, Any]) -> None:
        names = sorted(k for k in header if k != "__metadata__")
        header[names[which % len(names)]][field] = value

    path = work(files, "tensors.safetensors")
    rewrite_header(files["ckpt"], path, edit)
    for read in (read_metadata, verify_checkpoint, load_checkpoint):
        result = outcome(read, path)
        check(result, f"{read.__name__} with {field}={value!r}: {result}")


# ---------------------------------------------------------------------------------------------
# Activation stores (HDF5: in a forked child)


@FEW
@given(edits=byte_edits, cut=st.one_of(st.none(), st.floats(0, 1)))
def test_store_bytes(files: dict[str, Path], edits: list, cut: float | None) -> None:
    src = files["store"]
    data = overwrite(src.read_bytes(), edits, 4096)  # superblock, root group, attributes
    if cut is not None:
        data = data[: max(1, int(cut * len(data)))]
    path = work(files, "store.h5")
    path.write_bytes(data)
    for read in (read_all_store, describe):
        result = isolated(read, path)
        check(result, f"{read.__name__}: {result}")


attr_values = st.one_of(
    json_values.map(json.dumps),
    st.text(max_size=20),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=True),
    st.binary(max_size=16),
    st.lists(st.integers(-5, 5), min_size=1, max_size=4).map(np.array),
)


@FUZZ
@given(
    where=st.sampled_from(["/", "/train", "/test", "/train/a", "/test/b"]),
    key=st.sampled_from(["format", "model", "dataset", "layer_order", "shape", "pool", "arch"]),
    value=attr_values,
)
def test_store_attributes(files: dict[str, Path], where: str, key: str, value: Any) -> None:
    path = work(files, "attrs.h5")
    shutil.copyfile(files["store"], path)
    with h5py.File(path, "r+") as f:
        f[where].attrs[key] = value
    for read in (read_all_store, describe):
        result = isolated(read, path)
        check(result, f"{read.__name__} with {where}@{key}={value!r}: {result}")


@FUZZ
@given(
    name=st.sampled_from(["train/a", "train/b", "test/labels", "test/index", "train/extra"]),
    dtype=st.sampled_from(["float32", "float16", "float64", "int8", "int64", "uint8", "bool"]),
    shape=st.lists(st.integers(0, 40), min_size=0, max_size=3).map(tuple),
    fill=st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, 3e38]),
)
def test_store_datasets(
    files: dict[str, Path], name: str, dtype: str, shape: tuple, fill: float
) -> None:
    path = work(files, "datasets.h5")
    shutil.copyfile(files["store"], path)
    with h5py.File(path, "r+") as f:
        if name in f:
            del f[name]
        with np.errstate(all="ignore"):
            f[name] = np.full(shape, fill).astype(dtype)
    result = isolated(read_all_store, path)
    check(result, f"{name} as {dtype}{shape} of {fill}: {result}")


# ---------------------------------------------------------------------------------------------
# CKA shards


def merge_with(other: Path) -> Callable[[Path], None]:
    def merge(path: Path) -> None:
        from lossxfer.similarity.shard import merge_shards, read_shard

        read_shard(path)
        merge_shards([path, other])

    return merge


SHARD_KEYS = [
    *("lo", "hi", "total", "shard", "parts", "n", "rows", "unit", "layers_a", "widths_a"),
    *("widths_b", "estimator", "stores", "config"),
]


@FEW
@given(
    key=st.sampled_from(SHARD_KEYS),
    value=json_values,
)
def test_cka_shard_meta(files: dict[str, Path], key: str, value: Any) -> None:
    path = work(files, "shard.h5")
    shutil.copyfile(files["shard"], path)
    with h5py.File(path, "r+") as f:
        meta = json.loads(f.attrs["meta"])
        meta[key] = value
        f.attrs["meta"] = json.dumps(meta)
    result = isolated(merge_with(files["shard1"]), path)
    check(result, f"{key}={value!r}: {result}")


# ---------------------------------------------------------------------------------------------
# Result records


def mutate_json(doc: Any, path: list[int], value: Any) -> Any:
    """Replace the node reached by following `path` (indices into keys/items) with `value`."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    if isinstance(doc, dict):
        key = sorted(doc)[path[0] % len(doc)]
        return {**doc, key: mutate_json(doc[key], path[1:], value)}
    i = path[0] % len(doc)
    return [*doc[:i], mutate_json(doc[i], path[1:], value), *doc[i + 1 :]]


@MANY
@given(path=st.lists(st.integers(0, 50), max_size=4), value=json_values)
def test_record_structure(files: dict[str, Path], path: list[int], value: Any) -> None:
    doc = json.loads(files["record"].read_text())
    target = work(files, "record.json")
    target.write_text(json.dumps(mutate_json(doc, path, value)))
    for read in (load_result, describe):
        result = outcome(read, target)
        check(result, f"{read.__name__}: {result}")


@FUZZ
@given(edits=byte_edits)
def test_record_bytes(files: dict[str, Path], edits: list) -> None:
    target = work(files, "record.json")
    target.write_bytes(overwrite(files["record"].read_bytes(), edits, 400))
    for read in (load_result, describe):
        result = outcome(read, target)
        check(result, f"{read.__name__}: {result}")


@FEW
@given(which=st.sampled_from(["ckpt", "store", "record"]), edits=byte_edits, as_json=st.booleans())
def test_info_cli(files: dict[str, Path], which: str, edits: list, as_json: bool) -> None:
    """`lossxfer info` on any mutated file: exit 0 or 3, one error line, never exit 1."""
    src = files[which]
    hot = header_length(src) if which == "ckpt" else 1024
    target = work(files, f"info{src.suffix}")
    target.write_bytes(overwrite(src.read_bytes(), edits, hot))

    def run(path: Path) -> None:
        from lossxfer.cli import main

        try:
            main(["info", str(path), *(["--json"] if as_json else [])])
        except SystemExit as exc:
            if exc.code == 3:
                raise InputError("exit 3") from None
            if exc.code not in (0, None):
                raise AssertionError(f"exit {exc.code}") from None

    result = isolated(run, target)
    check(result, result)


def cli_outcome(argv: list[str]) -> Callable[[Path], None]:
    """The CLI as a reader: exit 0 is ok, 2 or 3 a (documented) refusal, anything else a bug."""

    def run(path: Path) -> None:
        from lossxfer.cli import main

        try:
            main([a.replace("{}", str(path)) for a in argv])
        except SystemExit as exc:
            if exc.code in (2, 3):
                raise InputError(f"exit {exc.code}") from None
            if exc.code not in (0, None):
                raise AssertionError(f"exit {exc.code}") from None

    return run


@FUZZ
@given(path=st.lists(st.integers(0, 50), max_size=4), value=json_values)
def test_report_on_mutated_records(files: dict[str, Path], path: list[int], value: Any) -> None:
    """`report` reads nothing but records: a mutated one is used, skipped or refused (exit 3)."""
    doc = json.loads(files["record"].read_text())
    target = work(files, "report.json")
    target.write_text(json.dumps(mutate_json(doc, path, value)))
    for fmt in ("markdown", "csv"):
        argv = ["report", "{}", "--format", fmt, "--layer", "a", "-q"]
        result = isolated(cli_outcome(argv), target)
        check(result, f"report --format {fmt}: {result}")


@FEW
@given(
    where=st.sampled_from(["/", "/test", "/test/a"]),
    key=st.sampled_from(["model", "dataset", "layer_order", "shape", "pool"]),
    value=attr_values,
)
def test_verbs_on_mutated_stores(files: dict[str, Path], where: str, key: str, value: Any) -> None:
    path = work(files, "verbs.h5")
    shutil.copyfile(files["store"], path)
    with h5py.File(path, "r+") as f:
        f[where].attrs[key] = value
    for argv in (["separation", "{}", "--json", "-q"], ["cka", "{}", "--backend", "numpy", "-q"]):
        result = isolated(cli_outcome(argv), path)
        check(result, f"{argv[0]} with {where}@{key}={value!r}: {result}")
