"""Loading a file never executes code or reaches outside it.

- No pickle: the package's source (parsed, so docstrings that explain the rule do not count) has
  no `pickle`-family import, no `torch.load`/`torch.jit.load`, no `np.load(allow_pickle=True)`,
  no `eval`/`exec`/`compile` and no `yaml.load`; and the scanner is shown to catch each.
- HDF5 stores whose objects point elsewhere (external links, soft links, virtual datasets,
  external raw storage) are refused on open, before anything is read through them.
- Metadata strings are data: a checkpoint, store or record whose strings look like code, shell
  or markup is refused or shown verbatim, and nothing runs (a marker file stays absent).
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from lossxfer.errors import InputError
from lossxfer.store import LayerSpec, StoreWriter, open_store

PACKAGE = Path(__file__).resolve().parent.parent / "lossxfer"
PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


# ---------------------------------------------------------------------------------------------
# No deserialisation of code


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Every use of a code-executing loader in `source`, as 'file:line: what'."""
    found: list[str] = []

    def hit(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")

    def dotted(node: ast.AST) -> str:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return f"{dotted(node.value)}.{node.attr}"
        return ""

    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLERS:
                    hit(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in PICKLERS:
                hit(node, f"from {node.module} import …")
            if module == "torch" and any(a.name == "load" for a in node.names):
                hit(node, "from torch import load")
        elif isinstance(node, ast.Call):
            name = dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if (
                name in ("eval", "exec", "compile", "__import__", "builtins.eval")
                or name.endswith(("torch.load", "jit.load"))
                or (last in ("load", "loads") and name.split(".")[0] in PICKLERS)
                or name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load")
            ):
                hit(node, f"{name}()")
            elif last == "load" and name.split(".")[0] in ("np", "numpy"):
                for kw in node.keywords:
                    if kw.arg == "allow_pickle" and not (
                        isinstance(kw.value, ast.Constant) and kw.value.value is False
                    ):
                        hit(node, f"{name}(allow_pickle=…)")
            for kw in node.keywords:
                if kw.arg == "weights_only" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is True
                ):
                    hit(node, f"{name}(weights_only=…)")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in ("Unpickler", "load")
            and dotted(node.value) in PICKLERS
        ):
            hit(node, dotted(node))
    return found


def test_the_package_never_unpickles_or_evaluates() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20
    found = [f for p in sources for f in unsafe_calls(p.read_text(), str(p.relative_to(PACKAGE)))]
    assert not found, "code-executing loaders in the package:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "import cPickle as p",
        "from pickle import loads",
        "import dill",
        "from joblib import load",
        "import torch\nstate = torch.load(path)",
        "from torch import load",
        "m = torch.jit.load(p)",
        "import numpy as np\nx = np.load(p, allow_pickle=True)",
        "x = numpy.load(p, allow_pickle=flag)",
        "eval(meta['objective'])",
        "exec(text)",
        "compile(src, 'x', 'exec')",
        "__import__(name)",
        "yaml.load(text)",
        "torch.load(p, weights_only=False)",
        "u = pickle.Unpickler(fh)",
    ],
)
def test_the_scanner_catches(snippet: str) -> None:
    assert unsafe_calls(snippet), snippet


def test_the_scanner_ignores_prose_and_safe_calls() -> None:
    clean = '''
"""Nothing here unpickles or torch.load()s: eval() would be wrong."""
import json
import numpy as np
x = np.load(p)  # allow_pickle defaults to False
y = np.load(p, allow_pickle=False)
model.eval()
'''
    assert unsafe_calls(clean) == []


# ---------------------------------------------------------------------------------------------
# Stores that point outside themselves


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "acts.h5"
    with StoreWriter(path, {"arch": "smallcnn"}) as w:
        w.create_split("test", 6, {"a": LayerSpec(2, (2,), "none")})
        w.write("test", 0, np.arange(6) % 2, np.arange(6), {"a": np.ones((6, 2), "float32")})
    return path


def _secret(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["rows"] = np.full((6, 2), 7.0, "float32")
        f.create_group("test")
        f["test/labels"] = np.zeros(6, "int64")
        f["test/index"] = np.arange(6)
        f["test/a"] = np.full((6, 2), 7.0, "float32")
    return secret


def _external_split(f: h5py.File, secret: Path) -> None:
    f["val"] = h5py.ExternalLink(str(secret), "/test")


def _external_layer(f: h5py.File, secret: Path) -> None:
    f["test/b"] = h5py.ExternalLink(str(secret), "/rows")


def _soft_layer(f: h5py.File, secret: Path) -> None:
    f["test/b"] = h5py.SoftLink("/test/a")


def _soft_split(f: h5py.File, secret: Path) -> None:
    f["val"] = h5py.SoftLink("/test")


def _virtual_layer(f: h5py.File, secret: Path) -> None:
    layout = h5py.VirtualLayout(shape=(6, 2), dtype="float32")
    layout[:] = h5py.VirtualSource(str(secret), "rows", shape=(6, 2))
    f["test"].create_virtual_dataset("b", layout)


def _virtual_replacing(f: h5py.File, secret: Path) -> None:
    del f["test/a"]
    layout = h5py.VirtualLayout(shape=(6, 2), dtype="float32")
    layout[:] = h5py.VirtualSource(str(secret), "rows", shape=(6, 2))
    f["test"].create_virtual_dataset("a", layout)


def _external_storage(f: h5py.File, secret: Path) -> None:
    raw = secret.parent / "raw.bin"
    raw.write_bytes(np.full((6, 2), 7.0, "float32").tobytes())
    f["test"].create_dataset("b", shape=(6, 2), dtype="float32", external=[(str(raw), 0, 48)])


def _external_labels(f: h5py.File, secret: Path) -> None:
    del f["test/labels"]
    f["test/labels"] = h5py.ExternalLink(str(secret), "/test/labels")


@pytest.mark.parametrize(
    "make",
    [
        _external_split,
        _external_layer,
        _soft_layer,
        _soft_split,
        _virtual_layer,
        _virtual_replacing,
        _external_storage,
        _external_labels,
    ],
)
def test_stores_pointing_elsewhere_are_refused(store: Path, tmp_path: Path, make, cli) -> None:  # type: ignore[no-untyped-def]
    secret = _secret(tmp_path)
    with h5py.File(store, "r+") as f:
        make(f, secret)
    with pytest.raises(InputError, match=r"refused|link|other files"):
        open_store(store)
    # every verb that reads a store says so in one line, exit 3
    for argv in (["info", store], ["separation", store], ["cka", store, "--backend", "numpy"]):
        run = cli(*argv)
        assert run.code == 3, (argv, run.stderr)
        assert run.stderr.startswith("lossxfer: error: ") and str(store) in run.stderr
        assert "7.0" not in run.stdout


# ---------------------------------------------------------------------------------------------
# Metadata strings are data


CODE = [
    "__import__('pathlib').Path('{marker}').touch()",
    "$(touch {marker})",
    "`touch {marker}`; touch {marker}",
    "{{{{7*7}}}}",
    "\\input{{/etc/passwd}}",
    "<script>alert(1)</script>",
    "\x1b]0;pwned\x07\x1b[2J",
]


def marker_text(template: str, marker: Path) -> str:
    return template.format(marker=marker)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from lossxfer.checkpoint import CheckpointMeta, save_checkpoint
    from lossxfer.inputs import InputSpec
    from lossxfer.models import build_network
    from lossxfer.objectives import make_objective

    torch.manual_seed(0)
    spec = InputSpec(1, 8, (0.5,), (0.29,))
    objective = make_objective("softmax", {})
    network = build_network("smallcnn", spec, objective, 2)
    meta = CheckpointMeta("smallcnn", "softmax", objective.options(), 2, [0, 1], spec,
                          {"spec": "synthetic", "classes": [0, 1]}, 0)  # fmt: skip
    return save_checkpoint(tmp_path_factory.mktemp("sec") / "model.safetensors", network, meta)


@pytest.mark.parametrize("template", CODE)
@pytest.mark.parametrize("key", ["arch", "objective", "objective_opts", "input", "data", "created"])
def test_checkpoint_metadata_is_never_evaluated(
    ckpt: Path, tmp_path: Path, key: str, template: str, cli
) -> None:  # type: ignore[no-untyped-def]
    from safetensors import safe_open
    from safetensors.torch import save_file

    marker = tmp_path / "PWNED"
    text = marker_text(template, marker)
    with safe_open(str(ckpt), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    if key in ("objective_opts", "input", "data"):
        doc = json.loads(meta[key])
        doc["evil"] = text  # an extra key: refused (options, input) or kept as data (data)
        meta[key] = json.dumps(doc)
    else:
        meta[key] = text
    path = tmp_path / "evil.safetensors"
    save_file(tensors, str(path), metadata=meta)
    for argv in (["info", path, "--json"], ["extract", path, "--data", "synthetic:classes=2",
                 "-o", tmp_path / "a.h5", "--device", "cpu", "--workers", 0, "-q"]):  # fmt: skip
        run = cli(*argv)
        assert run.code in (0, 3), (argv, run.stderr)
        assert "Traceback" not in run.stderr
        if run.code == 0 and argv[0] == "info" and text.isprintable():
            shown = json.dumps(json.loads(run.stdout)[0], ensure_ascii=False)
            assert text in shown or key in ("objective_opts", "input")
    assert not marker.exists()


@pytest.mark.parametrize("template", CODE)
def test_store_and_record_strings_are_shown_verbatim(
    store: Path, tmp_path: Path, template: str, cli
) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "PWNED"
    text = marker_text(template, marker)
    with h5py.File(store, "r+") as f:
        f.attrs["objective"] = text
        f.attrs["model"] = json.dumps({"objective": text, "arch": text})
    run = cli("info", store, "--json")
    assert run.code == 0, run.stderr
    described = json.loads(run.stdout)[0]
    assert described["objective"] == text and described["model"]["objective"] == text

    record = {
        "format": "lossxfer.result/1",
        "kind": "train",
        "created": text,
        "model": {"arch": "smallcnn", "objective": text, "objective_opts": {"x": text},
                  "seed": 0, "data": {"spec": text, "label": text}},
        "dataset": {"spec": text, "label": text},
        "metrics": {"test_top1": 0.5},
    }  # fmt: skip
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record))
    run = cli("info", path, "--json")
    assert run.code == 0 and json.loads(run.stdout)[0]["model"]["objective"] == text
    for fmt in ("markdown", "csv", "latex", "json"):
        run = cli("report", path, "--format", fmt, "--table", "summary")
        assert run.code in (0, 3), run.stderr
        assert "Traceback" not in run.stderr
    assert not marker.exists()


def test_pickles_in_every_slot_are_never_loaded(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """A pickle that would create a marker file when unpickled, given to every reader."""
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    for name in ("model.safetensors", "acts.h5", "r.json", "state.pt", "w.npy"):
        (tmp_path / name).write_bytes(pickle.dumps(Evil()))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(tmp_path / "model.safetensors", run_dir / "state.safetensors")
    out, cpu = tmp_path / "o.h5", ("--device", "cpu")
    runs = [
        cli("info", *(tmp_path / n for n in ("model.safetensors", "acts.h5", "r.json"))),
        cli("extract", tmp_path / "model.safetensors", "--data", "synthetic", "-o", out, *cpu),
        cli("separation", tmp_path / "acts.h5"),
        cli("cka", tmp_path / "acts.h5", "--backend", "numpy"),
        cli("cka", "--merge", tmp_path / "acts.h5", tmp_path / "r.json"),
        cli("report", tmp_path / "r.json"),
        cli("train", "--data", "synthetic", "-o", run_dir, "--resume", "--device", "cpu"),
    ]
    assert all(r.code == 3 for r in runs), [(r.code, r.stderr) for r in runs]
    assert not marker.exists()
