"""The bad-input matrix: every verb × every input it reads × every way that input can be bad.

Each cell runs the CLI in-process on one broken input and asserts the contract of docs/cli.md:
the documented exit code, exactly one line on stderr (`lossxfer: error: …`) that names the
offending file or option, no traceback, and no output created or modified (an existing output
given with --force is kept byte for byte, and no `.*.tmp` file is left beside it).

The table is generated: file cases (missing, empty, truncated, PNG, pickle, text, another
lossxfer kind, a newer format version, …) × the file inputs of every verb, plus per-kind cases
(wrong dtype or shape, NaN/inf activations, labels out of range, a split or layer that is not
there, misaligned stores) and nonsensical option values. Valid inputs come from one tiny real
pipeline (train → extract → separation/cka) built once per module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

DATA = "synthetic:classes=3,size=8,train=10,test=6"  # 30 + 18 images
LOG_LINE = re.compile(r"\d\d:\d\d:\d\d lossxfer (DEBUG|INFO) ")  # progress logs, not errors
CPU = ("--device", "cpu")
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa75\x81\x84"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


def run_cli(*args: object) -> tuple[int, str, str]:
    """The CLI in this process, with its own captured stdout/stderr (usable in any fixture)."""
    from lossxfer.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def must(*args: object) -> None:
    code, _out, err = run_cli(*args)
    assert code == 0, f"lossxfer {' '.join(map(str, args))} failed ({code}): {err}"


# ---------------------------------------------------------------------------------------------
# Valid inputs: one tiny real pipeline, built once.


@dataclass
class Artifacts:
    root: Path
    run: Path  # a finished run: model.safetensors, train.json

    @property
    def ckpt(self) -> Path:
        return self.run / "model.safetensors"

    @property
    def state(self) -> Path:
        """The state of the same run interrupted after its first step (a finished run keeps
        none)."""
        return self.root / "partial" / "state.safetensors"

    @property
    def train_json(self) -> Path:
        return self.run / "train.json"

    def __getattr__(self, name: str) -> Path:  # acts, part0, part1, sep, cka, cshard0, cshard1
        files = {
            "acts": "acts.h5",
            "part0": "part0.h5",
            "part1": "part1.h5",
            "sep": "sep.json",
            "cka": "cka.json",
            "cshard0": "cka0.h5",
            "cshard1": "cka1.h5",
        }
        if name not in files:
            raise AttributeError(name)
        return self.root / files[name]


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    root = tmp_path_factory.mktemp("valid")
    a = Artifacts(root, root / "run")
    must("train", "--data", DATA, "--epochs", 1, "--batch-size", 32, "-o", a.run, "-q", *CPU)
    interrupted_run(a.state.parent)
    must("extract", a.ckpt, "--data", DATA, "-o", a.acts, "-q", "--workers", 0, *CPU)
    for i in (0, 1):
        part = a.part0 if i == 0 else a.part1
        must("extract", a.ckpt, "--data", DATA, "-o", part, "--shard", f"{i}/2", "-q", *CPU,
             "--workers", 0)  # fmt: skip
        shard = a.cshard0 if i == 0 else a.cshard1
        must("cka", a.acts, "--shard", f"{i}/2", "-o", shard, "-q", "--backend", "numpy")
    must("separation", a.acts, "-o", a.sep, "-q")
    must("cka", a.acts, "-o", a.cka, "-q", "--backend", "numpy")
    return a


def interrupted_run(out: Path) -> None:
    """`train --data DATA --epochs 1 --batch-size 32` on the CPU, SIGTERMed after one step."""
    import signal

    from lossxfer.datasets import DataSpec
    from lossxfer.errors import Preempted
    from lossxfer.loop import OptimConfig, RunOptions
    from lossxfer.train import TrainConfig, train

    config = TrainConfig(
        str(DataSpec.parse(DATA)),
        optim=OptimConfig(epochs=1, batch_size=32),
        run=RunOptions(device="cpu"),
    )
    with pytest.raises(Preempted):
        train(config, out, progress=lambda *_: signal.raise_signal(signal.SIGTERM))


# ---------------------------------------------------------------------------------------------
# Ways to break a file. Each writes `dst` (or leaves it absent) from the valid `src`.


class Evil:
    """Unpickling this touches a marker file: proof that nothing unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def bad_pickle(src: Path, dst: Path) -> None:
    dst.write_bytes(pickle.dumps({"state_dict": Evil(dst.parent / "PWNED")}, protocol=4))


def newer_checkpoint(src: Path, dst: Path) -> None:
    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    meta["format"] = meta["format"].replace("/1", "/2")
    save_file(tensors, str(dst), metadata=meta)


def edit_checkpoint(edit: Callable[[dict, dict], None]) -> Callable[[Path, Path], None]:
    def make(src: Path, dst: Path) -> None:
        with safe_open(str(src), framework="pt") as fh:
            meta = dict(fh.metadata())
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        edit(tensors, meta)
        save_file(tensors, str(dst), metadata=meta)

    return make


def _first_weight(tensors: dict) -> str:
    return next(k for k, v in tensors.items() if v.ndim > 1)


def _wrong_shape(t: dict, m: dict) -> None:
    k = _first_weight(t)
    t[k] = t[k][:1].clone()


def _wrong_dtype(t: dict, m: dict) -> None:
    k = _first_weight(t)
    t[k] = t[k].double()


def _missing_tensor(t: dict, m: dict) -> None:
    del t[_first_weight(t)]


def _nan_weights(t: dict, m: dict) -> None:
    k = _first_weight(t)
    t[k] = t[k].clone()
    t[k].view(-1)[0] = float("nan")


def _bad_meta(t: dict, m: dict) -> None:
    m["num_classes"] = "7"


def _meta_types(t: dict, m: dict) -> None:
    m["input"] = json.dumps({"channels": "one", "size": [8], "mean": "x", "std": None})


def edit_store(edit: Callable[[h5py.File], None]) -> Callable[[Path, Path], None]:
    def make(src: Path, dst: Path) -> None:
        shutil.copyfile(src, dst)
        with h5py.File(dst, "r+") as f:
            edit(f)

    return make


def _store_newer(f: h5py.File) -> None:
    f.attrs["format"] = "lossxfer.activations/2"


def _store_no_format(f: h5py.File) -> None:
    del f.attrs["format"]


def _replace(f: h5py.File, name: str, data: np.ndarray) -> None:
    del f[name]
    f[name] = data


def _layer_int(f: h5py.File) -> None:
    for split in f:
        _replace(f, f"{split}/penultimate", f[f"{split}/penultimate"][...].astype("int32"))


def _layer_1d(f: h5py.File) -> None:
    for split in f:
        _replace(f, f"{split}/penultimate", f[f"{split}/penultimate"][:, 0])


def _layer_rows(f: h5py.File) -> None:
    for split in f:
        _replace(f, f"{split}/penultimate", f[f"{split}/penultimate"][:-1])


def _labels_float(f: h5py.File) -> None:
    for split in f:
        _replace(f, f"{split}/labels", f[f"{split}/labels"][...].astype("float32"))


def _nan(f: h5py.File) -> None:
    for split in f:
        ds = f[f"{split}/penultimate"]
        rows = ds[...]
        rows[1, 2] = np.nan
        ds[...] = rows


def _inf(f: h5py.File) -> None:
    for split in f:
        ds = f[f"{split}/penultimate"]
        rows = ds[...]
        rows[-1, 0] = -np.inf
        ds[...] = rows


def _labels_negative(f: h5py.File) -> None:
    for split in f:
        ds = f[f"{split}/labels"]
        labels = ds[...]
        labels[3] = -1
        ds[...] = labels


def _other_samples(f: h5py.File) -> None:
    for split in f:
        ds = f[f"{split}/index"]
        ds[...] = ds[...][::-1]


def _empty_split(f: h5py.File) -> None:
    for split in list(f):
        for name in list(f[split]):
            shape = f[f"{split}/{name}"].shape
            dtype = f[f"{split}/{name}"].dtype
            del f[f"{split}/{name}"]
            f[split].create_dataset(name, shape=(0, *shape[1:]), dtype=dtype)


def _no_splits(f: h5py.File) -> None:
    for split in list(f):
        del f[split]


def _model_attr_garbage(f: h5py.File) -> None:
    f.attrs["model"] = "{not json"


def _shard_newer(f: h5py.File) -> None:
    f.attrs["format"] = "lossxfer.cka-shard/2"


def _shard_meta_garbage(f: h5py.File) -> None:
    f.attrs["meta"] = "{nope"


def _shard_meta_edit(edit: Callable[[dict], object]) -> Callable[[h5py.File], None]:
    def make(f: h5py.File) -> None:
        meta = json.loads(f.attrs["meta"])
        edit(meta)
        f.attrs["meta"] = json.dumps(meta)

    return make


def _shard_sums_shape(f: h5py.File) -> None:
    name = next(iter(f["sums"]))
    _replace(f, f"sums/{name}", np.zeros(3))


def _shard_sums_nan(f: h5py.File) -> None:
    for name in f["sums"]:
        data = f[f"sums/{name}"][...]
        data.flat[0] = np.nan
        f[f"sums/{name}"][...] = data


def edit_json(edit: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    def make(src: Path, dst: Path) -> None:
        data = json.loads(src.read_text())
        data = edit(data) or data
        dst.write_text(json.dumps(data))

    return make


def _rec_newer(d: dict) -> None:
    d["format"] = "lossxfer.result/2"


def _rec_metrics_list(d: dict) -> None:
    d["metrics"] = [1, 2]


def _rec_kind(d: dict) -> None:
    d["kind"] = "banana"


def _rec_list(d: dict) -> object:
    return [d]


def _rec_model_str(d: dict) -> None:
    d["model"] = "softmax"


def _rec_layers_str(d: dict) -> None:
    d["metrics"]["layers"] = "penultimate"


def _rec_matrix_ragged(d: dict) -> None:
    d["metrics"]["matrix"] = [[1.0], [0.5, 0.2, 0.1]]


def _rec_r2_str(d: dict) -> None:
    for layer in d["metrics"]["layers"].values():
        layer["r2"] = "0.9"


def huge(src: Path, dst: Path) -> None:
    """A 200 MB sparse file that starts like the valid one (e.g. a big foreign *.json)."""
    with open(dst, "wb") as fh:
        fh.write(src.read_bytes()[:64])
        fh.truncate(200 << 20)


GENERIC: dict[str, Callable[[Path, Path], None]] = {
    "missing": lambda src, dst: None,
    "empty": lambda src, dst: dst.write_bytes(b""),
    "truncated": lambda src, dst: dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2]),
    "png": lambda src, dst: dst.write_bytes(PNG),
    "pickle": bad_pickle,
    "text": lambda src, dst: dst.write_text("hello, world\n"),
    "directory": lambda src, dst: dst.mkdir(),
    "fifo": lambda src, dst: os.mkfifo(dst),  # reading it would block for ever
}

BY_KIND: dict[str, dict[str, Callable[[Path, Path], None]]] = {
    "checkpoint": {
        "newer_version": newer_checkpoint,
        "a_store": lambda src, dst: shutil.copyfile(src.parent.parent / "acts.h5", dst),
        "a_record": lambda src, dst: shutil.copyfile(src.parent / "train.json", dst),
        "state_file": lambda src, dst: shutil.copyfile(
            src.parent.parent / "partial" / "state.safetensors", dst
        ),
        "wrong_shape": edit_checkpoint(_wrong_shape),
        "wrong_dtype": edit_checkpoint(_wrong_dtype),
        "missing_tensor": edit_checkpoint(_missing_tensor),
        "nan_weights": edit_checkpoint(_nan_weights),
        "bad_metadata": edit_checkpoint(_bad_meta),
        "metadata_types": edit_checkpoint(_meta_types),
    },
    "store": {
        "newer_version": edit_store(_store_newer),
        "no_format": edit_store(_store_no_format),
        "a_checkpoint": lambda src, dst: shutil.copyfile(src.parent / "run/model.safetensors", dst),
        "a_record": lambda src, dst: shutil.copyfile(src.parent / "sep.json", dst),
        "wrong_dtype": edit_store(_layer_int),
        "wrong_shape": edit_store(_layer_1d),
        "rows_mismatch": edit_store(_layer_rows),
        "float_labels": edit_store(_labels_float),
        "nan": edit_store(_nan),
        "inf": edit_store(_inf),
        "labels_negative": edit_store(_labels_negative),
        "empty_split": edit_store(_empty_split),
        "no_splits": edit_store(_no_splits),
        "bad_model_attr": edit_store(_model_attr_garbage),
    },
    "cka_shard": {
        "newer_version": edit_store(_shard_newer),
        "meta_not_json": edit_store(_shard_meta_garbage),
        "meta_lacks_key": edit_store(_shard_meta_edit(lambda m: m.pop("lo"))),
        "meta_wrong_type": edit_store(_shard_meta_edit(lambda m: m.update(lo="zero"))),
        "meta_widths_type": edit_store(_shard_meta_edit(lambda m: m.update(widths_a=7))),
        "sums_wrong_shape": edit_store(_shard_sums_shape),
        "sums_nan": edit_store(_shard_sums_nan),
        "a_store": lambda src, dst: shutil.copyfile(src.parent / "acts.h5", dst),
    },
    "record": {
        "newer_version": edit_json(_rec_newer),
        "a_store": lambda src, dst: shutil.copyfile(src.parent / "acts.h5", dst),
        "a_checkpoint": lambda src, dst: shutil.copyfile(src.parent / "run/model.safetensors", dst),
        "metrics_list": edit_json(_rec_metrics_list),
        "unknown_kind": edit_json(_rec_kind),
        "json_list": edit_json(_rec_list),
        "model_string": edit_json(_rec_model_str),
        "invalid_json": lambda src, dst: dst.write_text(src.read_text()[:-3] + "}}}"),
        "huge": huge,
    },
}


# ---------------------------------------------------------------------------------------------
# A cell: how to run the verb with one broken input, and what it must say.


@dataclass
class Env:
    art: Artifacts
    tmp: Path
    outputs: list[Path] = field(default_factory=list)

    def out(self, name: str, existing: bool = True) -> Path:
        """An output path in tmp; pre-existing (so --force must still keep it) by default."""
        path = self.tmp / "out" / name
        path.parent.mkdir(exist_ok=True)
        if existing:
            path.write_text("precious previous output\n")
            os.utime(path, (1_000_000_000, 1_000_000_000))
        self.outputs.append(path)
        return path


@dataclass(frozen=True)
class Cell:
    verb: str
    kind: str
    case: str
    build: Callable[[Env], list[object]]  # → argv (may create files under env.tmp)
    code: int
    names: str | None = None  # what stderr must contain; None: the broken file's name

    @property
    def id(self) -> str:
        return f"{self.verb}-{self.kind}-{self.case}"


BROKEN = "broken"  # stem of every broken input file, so stderr must name it


def broken(env: Env, kind: str, case: str, suffix: str) -> Path:
    src = {
        "checkpoint": env.art.ckpt,
        "store": env.art.acts,
        "record": env.art.sep,
        "state": env.art.state,
        "shard": env.art.part0,
        "cka_shard": env.art.cshard0,
    }[kind]
    dst = env.tmp / f"{BROKEN}{suffix}"
    maker = GENERIC.get(case) or BY_KIND[_family(kind)][case]
    maker(src, dst)
    return dst


def _family(kind: str) -> str:
    return {"state": "checkpoint", "shard": "store"}.get(kind, kind)


def file_cells() -> Iterator[Cell]:
    """Broken files in every file slot of every verb."""
    ckpt_cases = [*GENERIC, *BY_KIND["checkpoint"]]
    store_cases = [*GENERIC, *BY_KIND["store"]]
    record_cases = [*GENERIC, *BY_KIND["record"]]

    for case in ckpt_cases:

        def extract(env: Env, case: str = case) -> list[object]:
            ckpt = broken(env, "checkpoint", case, ".safetensors")
            out = env.out("acts.h5")
            return ["extract", ckpt, "--data", DATA, "-o", out, "--force", "--workers", 0, *CPU]

        yield Cell("extract", "checkpoint", case, extract, 3)

    for case in store_cases:

        def separation(env: Env, case: str = case) -> list[object]:
            store = broken(env, "store", case, ".h5")
            return ["separation", store, "-o", env.out("sep.json"), "--force"]

        def cka_a(env: Env, case: str = case) -> list[object]:
            store = broken(env, "store", case, ".h5")
            return ["cka", store, env.art.acts, "-o", env.out("cka.json"), "--force",
                    "--backend", "numpy"]  # fmt: skip

        def cka_b(env: Env, case: str = case) -> list[object]:
            store = broken(env, "store", case, ".h5")
            return ["cka", env.art.acts, store, "-o", env.out("cka.json"), "--force",
                    "--backend", "numpy"]  # fmt: skip

        def cka_shard(env: Env, case: str = case) -> list[object]:
            store = broken(env, "store", case, ".h5")
            return ["cka", store, "--shard", "0/2", "-o", env.out("part.h5"), "--force",
                    "--backend", "numpy"]  # fmt: skip

        def merge(env: Env, case: str = case) -> list[object]:
            shard = broken(env, "shard", case, ".h5")
            return ["store", "merge", shard, env.art.part1, "-o", env.out("m.h5"), "--force"]

        yield Cell("separation", "store", case, separation, 3)
        yield Cell("cka", "store_a", case, cka_a, 3)
        yield Cell("cka", "store_b", case, cka_b, 3)
        code = 2 if case == "empty_split" else 3  # cka: "needs at least 4 rows" is exit 2
        yield Cell("cka", "store_shard", case, cka_shard, code)
        yield Cell("store_merge", "shard", case, merge, 3)

    for case in [*GENERIC, *BY_KIND["cka_shard"]]:

        def cka_merge(env: Env, case: str = case) -> list[object]:
            part = broken(env, "cka_shard", case, ".h5")
            return ["cka", "--merge", part, env.art.cshard1, "-o", env.out("cka.json"), "--force"]

        yield Cell("cka", "merge_shard", case, cka_merge, 3)

    for case in record_cases:

        def report(env: Env, case: str = case) -> list[object]:
            record = broken(env, "record", case, ".json")
            return ["report", record, "-o", env.out("table.md"), "--force"]

        yield Cell("report", "record", case, report, 3)

    for family, suffix in (("checkpoint", ".safetensors"), ("store", ".h5"), ("record", ".json")):
        cases = [c for c in BY_KIND[family] if not c.startswith("a_")]
        for case in [*GENERIC, *cases]:
            if family != "checkpoint" and case in GENERIC:
                continue  # generic cases are the same bytes whatever the kind was

            def info(env: Env, case: str = case, family: str = family, suffix: str = suffix):
                return ["info", broken(env, family, case, suffix)]

            # info describes metadata: NaN weights or activations are not its business, and it
            # reads a checkpoint's header without torch, so the tensors' shapes, dtypes and
            # completeness are checked by the loader (the extract cells above), not by info
            if case in ("nan_weights", "nan", "inf", "labels_negative", "labels_out_of_range"):
                continue
            if family == "checkpoint" and case in ("wrong_shape", "wrong_dtype", "missing_tensor"):
                continue
            if case == "empty_split":
                continue
            yield Cell("info", family, case, info, 3)

    # A missing state is no error: --resume then starts afresh (tests/test_train.py).
    cases = [c for c in GENERIC if c != "missing"]
    for case in [*cases, "newer_version", "a_store", "wrong_shape", "wrong_dtype"]:

        def resume(env: Env, case: str = case) -> list[object]:
            run = env.tmp / "run"  # an interrupted run: its state, no outputs
            shutil.copytree(env.art.state.parent, run)
            (run / "state.safetensors").unlink()
            src_case = {"newer_version": edit_checkpoint(_state_newer)}.get(case)
            dst = run / "state.safetensors"
            if src_case is not None:
                src_case(env.art.state, dst)
            elif case == "a_store":
                shutil.copyfile(env.art.acts, dst)
            elif case in ("wrong_shape", "wrong_dtype"):
                edit_checkpoint(_state_wrong_shape if case == "wrong_shape" else _state_dtype)(
                    env.art.state, dst
                )
            else:
                GENERIC[case](env.art.state, dst)
            for name in ("model.safetensors", "train.json"):
                env.outputs.append(run / name)
            return ["train", "--data", DATA, "--epochs", 1, "--batch-size", 32, "-o", run,
                    "--resume", "-q", *CPU]  # fmt: skip

        yield Cell("train", "state", case, resume, 3, names="state.safetensors")


def _state_newer(t: dict, m: dict) -> None:
    m["format"] = m["format"].replace("/1", "/2")


def _state_wrong_shape(t: dict, m: dict) -> None:
    k = next(k for k, v in t.items() if k.startswith("model/") and v.ndim > 1)
    t[k] = t[k][:1].clone()


def _state_dtype(t: dict, m: dict) -> None:
    k = next(k for k, v in t.items() if k.startswith("model/") and v.ndim > 1)
    t[k] = t[k].half()


def store_content_cells() -> Iterator[Cell]:
    """Splits, layers and alignment that a store does not have."""

    def sep(*extra: object, fixture: str = "acts") -> Callable[[Env], list[object]]:
        return lambda env: [
            "separation", getattr(env.art, fixture), *extra, "-o", env.out("sep.json"), "--force"
        ]  # fmt: skip

    def cka(*extra: object) -> Callable[[Env], list[object]]:
        return lambda env: ["cka", env.art.acts, *extra, "-o", env.out("cka.json"), "--force",
                            "--backend", "numpy"]  # fmt: skip

    yield Cell("separation", "store", "no_such_split", sep("--split", "val"), 3, "'val'")
    yield Cell("separation", "store", "no_such_layer", sep("--layer", "block9"), 2, "block9")
    yield Cell("cka", "store", "no_such_split", cka("--split", "val"), 3, "'val'")
    yield Cell("cka", "store", "no_such_layer", cka("--layers", "block9"), 2, "block9")
    yield Cell(
        "cka", "store", "no_such_layer_b_one_store", cka("--layers-b", "block9"), 2, "block9"
    )

    def layer_b_missing(env: Env) -> list[object]:
        return ["cka", env.art.acts, env.art.acts, "--layers-b", "block9", "-o",
                env.out("cka.json"), "--force", "--backend", "numpy"]  # fmt: skip

    yield Cell("cka", "store", "no_such_layer_b", layer_b_missing, 2, "block9")

    def misaligned(env: Env) -> list[object]:
        other = broken(env, "store", "missing", ".h5")
        edit_store(_other_samples)(env.art.acts, other)
        return ["cka", env.art.acts, other, "-o", env.out("cka.json"), "--force",
                "--backend", "numpy"]  # fmt: skip

    def fewer(env: Env) -> list[object]:
        other = env.tmp / f"{BROKEN}.h5"
        must("extract", env.art.ckpt, "--data", DATA, "-o", other, "--limit", 5, "-q", *CPU,
             "--workers", 0)  # fmt: skip
        return ["cka", env.art.acts, other, "-o", env.out("cka.json"), "--force",
                "--backend", "numpy"]  # fmt: skip

    yield Cell("cka", "two_stores", "different_samples", misaligned, 3)
    yield Cell("cka", "two_stores", "different_count", fewer, 3)

    def merge_incomplete(env: Env) -> list[object]:
        return ["store", "merge", env.art.part0, "-o", env.out("m.h5"), "--force"]

    def merge_twice(env: Env) -> list[object]:
        return ["store", "merge", env.art.part0, env.art.part0, "-o", env.out("m.h5"), "--force"]

    def merge_not_shards(env: Env) -> list[object]:
        return ["store", "merge", env.art.acts, env.art.part1, "-o", env.out("m.h5"), "--force"]

    yield Cell("store_merge", "shard", "incomplete", merge_incomplete, 3, "part0.h5")
    yield Cell("store_merge", "shard", "given_twice", merge_twice, 3, "part0.h5")
    yield Cell("store_merge", "shard", "not_a_shard", merge_not_shards, 3, "acts.h5")

    def cka_merge_incomplete(env: Env) -> list[object]:
        return ["cka", "--merge", env.art.cshard0, "-o", env.out("cka.json"), "--force"]

    def cka_merge_stores(env: Env) -> list[object]:
        return ["cka", "--merge", env.art.acts, env.art.cshard1, "-o", env.out("cka.json"),
                "--force"]  # fmt: skip

    yield Cell("cka", "merge_shard", "incomplete", cka_merge_incomplete, 3, "cka0.h5")
    yield Cell("cka", "merge_shard", "not_a_shard", cka_merge_stores, 3, "acts.h5")

    def report_wrong_layer(env: Env) -> list[object]:
        return ["report", env.art.sep, "--layer", "block9", "-o", env.out("t.md"), "--force"]

    yield Cell("report", "record", "no_such_layer", report_wrong_layer, 2, "block9")


def dataset_cells() -> Iterator[Cell]:
    """Datasets that are missing, unknown, or subsets that do not exist."""
    specs = {
        "unknown_name": ("nosuchdata", "nosuchdata"),
        "missing_root": ("mnist:/nonexistent/mnist", "/nonexistent/mnist"),
        "missing_folder": ("imagefolder:/nonexistent/imgs", "/nonexistent/imgs"),
        "bad_spec_option": ("synthetic:classes=banana", "banana"),
        "negative_size": ("synthetic:classes=3,size=-8", "size"),
        "empty_train_split": ("synthetic:classes=3,size=8,train=0", "train"),
        "empty_test_split": ("synthetic:classes=3,size=8,test=0", "test"),
        "too_small_for_val": ("synthetic:classes=3,size=8,train=1", "val"),
    }
    for case, (spec, names) in specs.items():
        code = 3 if case in ("missing_root", "missing_folder") else 2

        def train(env: Env, spec: str = spec) -> list[object]:
            run = env.tmp / "run"
            env.outputs.append(run)
            return ["train", "--data", spec, "-o", run, "--epochs", 1, "-q", *CPU]

        def extract(env: Env, spec: str = spec) -> list[object]:
            return ["extract", env.art.ckpt, "--data", spec, "-o", env.out("a.h5"), "--force",
                    "--workers", 0, *CPU]  # fmt: skip

        yield Cell("train", "dataset", case, train, code, names)
        if case != "too_small_for_val":  # extraction holds out no val split by default
            yield Cell("extract", "dataset", case, extract, code, names)

    def empty_folder(env: Env) -> list[object]:
        folder = env.tmp / "emptyimgs"
        (folder / "train").mkdir(parents=True)
        run = env.tmp / "run"
        env.outputs.append(run)
        return ["train", "--data", f"imagefolder:{folder}", "-o", run, "--epochs", 1, *CPU]

    yield Cell("train", "dataset", "empty_imagefolder", empty_folder, 3, "emptyimgs")

    subsets = {
        "classes_out_of_range": ("0-7", 2),
        "classes_reversed": ("9-3", 2),
        "classes_garbage": ("a-b", 2),
        "classes_comma": (",", 2),
        "classes_negative": ("-1", 2),
        "classes_single": ("1", 2),
    }
    for case, (classes, code) in subsets.items():

        def train_c(env: Env, classes: str = classes) -> list[object]:
            run = env.tmp / "run"
            env.outputs.append(run)
            return ["train", "--data", DATA, "--classes", classes, "-o", run, "--epochs", 1,
                    "-q", *CPU]  # fmt: skip

        def extract_c(env: Env, classes: str = classes) -> list[object]:
            return ["extract", env.art.ckpt, "--data", DATA, "--classes", classes,
                    "-o", env.out("a.h5"), "--force", "--workers", 0, *CPU]  # fmt: skip

        yield Cell("train", "classes", case, train_c, code, "--classes")
        if case != "classes_single":  # a one-class transfer set is legitimate for extraction
            yield Cell("extract", "classes", case, extract_c, code, "--classes")


def option_cells() -> Iterator[Cell]:
    """Nonsensical option values: exit 2 naming the option (4 for an absent device)."""

    def train(*extra: object) -> Callable[[Env], list[object]]:
        def args(env: Env) -> list[object]:
            run = env.tmp / "run"
            env.outputs.append(run)
            return ["train", "--data", DATA, "-o", run, "--epochs", 1, "-q", *extra]

        return args

    train_opts = {
        "epochs_negative": (("--epochs", -3), "--epochs"),
        "epochs_zero": (("--epochs", 0), "--epochs"),
        "batch_zero": (("--batch-size", 0), "--batch-size"),
        "lr_negative": (("--lr", -0.1), "--lr"),
        "lr_nan": (("--lr", "nan"), "--lr"),
        "momentum_above_one": (("--momentum", 1.5), "--momentum"),
        "weight_decay_negative": (("--weight-decay", -1), "--weight-decay"),
        "warmup_negative": (("--warmup-epochs", -1), "--warmup-epochs"),
        "ema_one": (("--ema", 1.0), "--ema"),
        "val_fraction_above_one": (("--val-fraction", 1.5), "--val-fraction"),
        "val_fraction_negative": (("--val-fraction", -0.1), "--val-fraction"),
        "loss_unknown": (("--loss", "softmaxx"), "softmaxx"),
        "loss_opt_unknown": (("--loss-opt", "bogus=1"), "bogus"),
        "loss_opt_no_value": (("--loss-opt", "alpha"), "alpha"),
        "loss_opt_bad_value": (("--loss", "label_smoothing", "--loss-opt", "alpha=x"), "alpha"),
        "arch_unknown": (("--arch", "vgg99"), "vgg99"),
        "workers_negative": (("--workers", -1), "--workers"),
        "device_garbage": (("--device", "tpu"), "tpu"),
        "device_absent": (("--device", "cuda:7"), "cuda"),
        "epochs_not_int": (("--epochs", "ten"), "--epochs"),
    }
    for case, (extra, names) in train_opts.items():
        code = 4 if case == "device_absent" else 2
        yield Cell("train", "option", case, train(*extra), code, names)

    def extract(*extra: object) -> Callable[[Env], list[object]]:
        return lambda env: ["extract", env.art.ckpt, "--data", DATA, "-o", env.out("a.h5"),
                            "--force", "--workers", 0, *extra]  # fmt: skip

    extract_opts = {
        "batch_zero": (("--batch-size", 0), "--batch-size"),
        "shard_beyond": (("--shard", "3/2"), "--shard"),
        "shard_zero_parts": (("--shard", "0/0"), "--shard"),
        "shard_garbage": (("--shard", "a/b"), "--shard"),
        "shard_negative": (("--shard", "-1/2"), "--shard"),
        "pool_unknown": (("--pool", "max"), "--pool"),
        "dtype_unknown": (("--dtype", "int8"), "--dtype"),
        "compression_unknown": (("--compression", "zip"), "--compression"),
        "split_unknown": (("--split", "holdout"), "holdout"),
        "split_twice": (("--split", "train,train"), "--split"),
        "layer_unknown": (("--layers", "block9"), "block9"),
        "limit_zero": (("--limit", 0), "--limit"),
        "val_fraction_two": (("--split", "val", "--val-fraction", 2), "--val-fraction"),
        "workers_negative": (("--workers", -1), "--workers"),
        "device_absent": (("--device", "cuda:7"), "cuda"),
    }
    for case, (extra, names) in extract_opts.items():
        code = 4 if case == "device_absent" else 2
        yield Cell("extract", "option", case, extract(*extra), code, names)

    def cka(*extra: object) -> Callable[[Env], list[object]]:
        return lambda env: ["cka", env.art.acts, *extra, "-o", env.out("cka.json"), "--force"]

    cka_opts = {
        "estimator_unknown": (("--estimator", "cosine"), "--estimator"),
        "batch_zero": (("--estimator", "minibatch", "--batch-size", 0), "--batch-size"),
        "passes_zero": (("--estimator", "minibatch", "--passes", 0), "--passes"),
        "threshold_zero": (("--estimator", "rbf", "--threshold", 0), "--threshold"),
        "max_n_one": (("--estimator", "rbf", "--max-n", 1), "--max-n"),
        "block_rows_negative": (("--block-rows", -1), "--block-rows"),
        "shard_beyond": (("--shard", "3/2"), "--shard"),
        "shard_garbage": (("--shard", "x/y"), "--shard"),
        "shard_zero_parts": (("--shard", "0/0"), "--shard"),
        "backend_unknown": (("--backend", "fortran"), "fortran"),
        "backend_absent": (("--backend", "cupy"), "cupy"),
        "merge_and_shard": (("--merge", "--shard", "0/2"), "--merge"),
    }
    for case, (extra, names) in cka_opts.items():
        code = 4 if case == "backend_absent" else 2
        yield Cell("cka", "option", case, cka(*extra), code, names)

    def three(env: Env) -> list[object]:
        a = env.art.acts
        return ["cka", a, a, a, "-o", env.out("cka.json"), "--force"]

    yield Cell("cka", "option", "three_stores", three, 2, "--merge")

    def sep(*extra: object) -> Callable[[Env], list[object]]:
        return lambda env: ["separation", env.art.acts, *extra, "-o", env.out("s.json"), "--force"]

    yield Cell("separation", "option", "block_rows_zero", sep("--block-rows", 0), 2, "--block-rows")
    yield Cell("separation", "option", "max_cov_negative", sep("--max-cov-dim", -1), 2,
               "--max-cov-dim")  # fmt: skip

    def report(*extra: object) -> Callable[[Env], list[object]]:
        return lambda env: ["report", env.art.sep, env.art.train_json, *extra,
                            "-o", env.out("t.md"), "--force"]  # fmt: skip

    report_opts = {
        "table_unknown": (("--table", "everything"), "everything"),
        "format_unknown": (("--format", "docx"), "docx"),
        "json_and_csv": (("--json", "--format", "csv"), "--format"),
    }
    for case, (extra, names) in report_opts.items():
        yield Cell("report", "option", case, report(*extra), 2, names)

    # Outputs: an existing output without --force is refused and kept; a directory is refused.
    def exists(verb_args: Callable[[Env, Path], list[object]], name: str):
        def args(env: Env) -> list[object]:
            return verb_args(env, env.out(name))

        return args

    outs = {
        "extract": lambda env, o: ["extract", env.art.ckpt, "--data", DATA, "-o", o, *CPU],
        "separation": lambda env, o: ["separation", env.art.acts, "-o", o],
        "cka": lambda env, o: ["cka", env.art.acts, "-o", o, "--backend", "numpy"],
        "cka_plot": lambda env, o: ["cka", env.art.acts, "--plot", o, "--backend", "numpy"],
        "report": lambda env, o: ["report", env.art.sep, "-o", o],
        "store_merge": lambda env, o: ["store", "merge", env.art.part0, env.art.part1, "-o", o],
        "train": lambda env, o: ["train", "--data", DATA, "-o", o.parent, "--epochs", 1, *CPU],
    }
    for verb, fn in outs.items():
        name = "model.safetensors" if verb == "train" else "result.out"
        yield Cell(verb.split("_")[0] if verb != "store_merge" else verb, "output",
                   f"exists_{verb}", exists(fn, name), 2, name)  # fmt: skip

        def is_dir(env: Env, fn=fn, verb=verb) -> list[object]:
            target = env.tmp / "out" / "adir"
            target.mkdir(parents=True)
            (target / "keep").write_text("x")
            env.outputs.append(target / "keep")
            return fn(env, target if verb != "train" else target / "x")

        if verb not in ("train", "report"):  # report -o DIR: one file per table (test_report)
            yield Cell(verb.split("_")[0] if verb != "store_merge" else verb, "output",
                       f"directory_{verb}", is_dir, 2, "adir")  # fmt: skip

    def plot_suffix(env: Env) -> list[object]:
        return ["cka", env.art.acts, "--plot", env.tmp / "out" / "heat.txt", "--backend", "numpy"]

    yield Cell("cka", "option", "plot_suffix_unknown", plot_suffix, 2, "--plot")

    under_a_file = {
        "separation": lambda env, o: ["separation", env.art.acts, "-o", o],
        "extract": lambda env, o: ["extract", env.art.ckpt, "--data", DATA, "-o", o, *CPU],
        "report": lambda env, o: ["report", env.art.sep, "-o", o],
        "train": lambda env, o: ["train", "--data", DATA, "-o", o, "--epochs", 1, *CPU],
    }
    for verb, fn in under_a_file.items():

        def below_file(env: Env, fn=fn) -> list[object]:
            blocker = env.out("blocker")
            return fn(env, blocker / "sub" / "result.out")

        yield Cell(verb, "output", "parent_is_a_file", below_file, 2, "blocker")

    def train_out_file(env: Env) -> list[object]:
        target = env.out("not_a_dir")
        return ["train", "--data", DATA, "-o", target, "--epochs", 1, *CPU]

    yield Cell("train", "output", "out_is_a_file", train_out_file, 2, "not_a_dir")

    def train_state_exists(env: Env) -> list[object]:
        run = env.tmp / "run"
        shutil.copytree(env.art.state.parent, run)
        env.outputs.append(run / "state.safetensors")
        env.outputs.append(run / "model.safetensors")
        return ["train", "--data", DATA, "-o", run, "--epochs", 1, *CPU]

    yield Cell("train", "output", "state_exists", train_state_exists, 2, "state.safetensors")

    def resume_changed(env: Env) -> list[object]:
        run = env.tmp / "run"
        shutil.copytree(env.art.state.parent, run)
        env.outputs += [run / n for n in ("state.safetensors", "model.safetensors", "train.json")]
        return ["train", "--data", DATA, "-o", run, "--epochs", 1, "--batch-size", 16,
                "--resume", *CPU]  # fmt: skip

    yield Cell("train", "state", "other_config", resume_changed, 2, "batch")


def probe_finetune_cells() -> Iterator[Cell]:
    """The probe (a store) and finetune (a checkpoint and a dataset) verbs."""
    for case in [*GENERIC, *BY_KIND["store"]]:

        def probe(env: Env, case: str = case) -> list[object]:
            store = broken(env, "store", case, ".h5")
            return ["probe", store, "--method", "knn", "-o", env.out("p.json"), "--force"]

        yield Cell("probe", "store", case, probe, 3)

    def run_dir(env: Env) -> Path:
        run = env.tmp / "ft"
        env.outputs.append(run)
        return run

    finetune_args = ("--epochs", 1, "--lr", 0.01, "--weight-decay", 0, "-q", *CPU)
    for case in [*GENERIC, *BY_KIND["checkpoint"]]:

        def finetune(env: Env, case: str = case) -> list[object]:
            ckpt = broken(env, "checkpoint", case, ".safetensors")
            return ["finetune", ckpt, "--data", DATA, "-o", run_dir(env), *finetune_args]

        yield Cell("finetune", "checkpoint", case, finetune, 3)

    def probe_opt(*extra: object) -> Callable[[Env], list[object]]:
        return lambda env: ["probe", env.art.acts, *extra, "-o", env.out("p.json"), "--force"]

    probe_opts = {
        "method_unknown": (("--method", "svm"), "svm", 2),
        "grid_zero": (("--method", "linear", "--grid", 0), "--grid", 2),
        "grid_range_reversed": (("--method", "linear", "--grid-range", "5,1"), "--grid-range", 2),
        "grid_range_garbage": (("--method", "linear", "--grid-range", "a,b"), "--grid-range", 2),
        "tol_negative": (("--method", "linear", "--tol", -1), "--tol", 2),
        "max_iter_zero": (("--method", "linear", "--max-iter", 0), "--max-iter", 2),
        "val_fraction_above_one": (("--val-fraction", 1.5), "--val-fraction", 2),
        "no_such_layer": (("--layer", "block9"), "block9", 2),
    }
    for case, (extra, names, code) in probe_opts.items():
        yield Cell("probe", "option", case, probe_opt(*extra), code, names)

    def one_class(env: Env) -> list[object]:
        store = env.tmp / f"{BROKEN}.h5"
        edit_store(_one_class_train)(env.art.acts, store)
        return ["probe", store, "--method", "knn", "-o", env.out("p.json"), "--force"]

    yield Cell("probe", "store", "one_class_in_train", one_class, 3)

    def ft(*extra: object, data: str = DATA) -> Callable[[Env], list[object]]:
        return lambda env: ["finetune", env.art.ckpt, "--data", data, "-o", run_dir(env),
                            *finetune_args, *extra]  # fmt: skip

    ft_opts = {
        "epochs_negative": (("--epochs", -1), "--epochs", 2),
        "batch_zero": (("--batch-size", 0), "--batch-size", 2),
        "lr_negative": (("--lr", -0.1), "--lr", 2),
        "lr_garbage": (("--lr", "fast"), "--lr", 2),
        "weight_decay_negative": (("--weight-decay", -1), "--weight-decay", 2),
        "momentum_above_one": (("--momentum", 1.5), "--momentum", 2),
        "val_fraction_above_one": (("--val-fraction", 1.5), "--val-fraction", 2),
        "classes_reversed": (("--classes", "9-3"), "--classes", 2),
        "classes_out_of_range": (("--classes", "0-7"), "--classes", 2),
        "loss_unknown": (("--loss", "softmaxx"), "softmaxx", 2),
        "device_absent": (("--device", "cuda:7"), "cuda", 4),
    }
    for case, (extra, names, code) in ft_opts.items():
        yield Cell("finetune", "option", case, ft(*extra), code, names)
    for case, spec, names, code in (
        ("missing_root", "mnist:/nonexistent/mnist", "/nonexistent/mnist", 3),
        ("unknown_name", "nosuchdata", "nosuchdata", 2),
    ):
        yield Cell("finetune", "dataset", case, ft(data=spec), code, names)


def _one_class_train(f: h5py.File) -> None:
    ds = f["train/labels"]
    ds[...] = np.zeros_like(ds[...])


CELLS = [*file_cells(), *store_content_cells(), *dataset_cells(), *option_cells(),
         *probe_finetune_cells()]  # fmt: skip


def snapshot(paths: list[Path]) -> dict[Path, object]:
    out: dict[Path, object] = {}
    for p in paths:
        if p.is_file():
            out[p] = (p.read_bytes(), p.stat().st_mtime_ns)
        elif p.is_dir():
            out[p] = sorted(str(q.relative_to(p)) for q in p.rglob("*"))
        else:
            out[p] = None
    return out


def stray_temps(folders: set[Path]) -> list[Path]:
    return [p for d in folders if d.is_dir() for p in d.rglob(".*.tmp")]


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_bad_input(cell: Cell, art: Artifacts, tmp_path: Path, cli) -> None:
    env = Env(art, tmp_path / "work")
    env.tmp.mkdir()
    argv = cell.build(env)
    before = snapshot(env.outputs)
    valid_before = snapshot([art.ckpt, art.acts, art.sep, art.state])
    result = cli(*argv)

    lines = [ln for ln in result.stderr.strip().splitlines() if not LOG_LINE.match(ln)]
    assert result.code == cell.code, (result.code, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("lossxfer: error: "), lines[0]
    assert "internal error" not in lines[0], lines[0]
    names = cell.names or BROKEN
    assert names in lines[0], f"stderr does not name {names!r}: {lines[0]}"
    if cell.code != 0:
        assert result.stdout == "", result.stdout
    assert snapshot(env.outputs) == before, "an output was created or modified"
    assert snapshot([art.ckpt, art.acts, art.sep, art.state]) == valid_before
    assert not stray_temps({env.tmp, *(p.parent for p in env.outputs)})
    assert not (env.tmp / "PWNED").exists(), "a pickle was loaded"


def test_nan_literals_in_a_record_read_as_null(tmp_path: Path) -> None:
    """Records are written with null for NaN; a NaN/Infinity token (not JSON) reads as null."""
    from lossxfer.results import load_result

    path = tmp_path / "r.json"
    path.write_text(
        '{"format": "lossxfer.result/1", "kind": "separation", "metrics": '
        '{"r2": NaN, "d": Infinity, "e": -Infinity, "ok": 0.5}}'
    )
    assert load_result(path).metrics == {"r2": None, "d": None, "e": None, "ok": 0.5}
