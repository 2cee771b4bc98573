"""The public API: the lazy export table, typed results, and the light `import lossxfer`."""

from __future__ import annotations

import ast
import dataclasses
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

import lossxfer
from lossxfer.errors import InputError
from lossxfer.results import Record, Result

INIT = Path(lossxfer.__file__)
HEAVY = ("torch", "numpy", "h5py", "scipy", "sklearn", "matplotlib", "cupy", "timm")


def test_import_lossxfer_imports_nothing_heavy() -> None:
    code = "import sys, lossxfer; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def _type_checking_imports() -> dict[str, str]:
    """name → module of the `if TYPE_CHECKING:` re-exports in lossxfer/__init__.py."""
    tree = ast.parse(INIT.read_text())
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n)
    )
    out = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name}: re-export as `import X as X`"
            out[alias.name] = node.module
    return out


def test_type_checking_imports_equal_the_export_table() -> None:
    assert _type_checking_imports() == lossxfer._EXPORTS


@pytest.mark.parametrize("name", sorted(lossxfer._EXPORTS))
def test_every_exported_name_resolves_to_its_module(name: str) -> None:
    obj = getattr(lossxfer, name)
    assert getattr(obj, "__module__", lossxfer._EXPORTS[name]) == lossxfer._EXPORTS[name]
    assert name in dir(lossxfer) and name in lossxfer.__all__


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'cka_typo'"):
        _ = lossxfer.cka_typo  # type: ignore[attr-defined]


def test_py_typed_is_shipped() -> None:
    assert (INIT.parent / "py.typed").exists()
    assert 'lossxfer = ["py.typed"]' in (INIT.parent.parent / "pyproject.toml").read_text()


@dataclasses.dataclass
class _Piece(Record):
    score: float | None
    curve: list[dict[str, Any]]
    label: str = "x"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Strict(Record):
    score: float


def test_record_round_trip_and_extra_keys_at_top_level() -> None:
    piece = _Piece(0.5, [{"value": 1.0}], extra={"vote": "weighted"})
    data = piece.to_dict()
    assert data == {"score": 0.5, "curve": [{"value": 1.0}], "label": "x", "vote": "weighted"}
    assert _Piece.from_dict(data) == piece
    assert _Piece(float("nan"), []).to_dict()["score"] is None  # JSON: NaN → null


def test_record_from_dict_rejects_missing_and_unknown_keys() -> None:
    with pytest.raises(InputError, match=r"r\.json: _Strict lacks score"):
        _Strict.from_dict({}, source="r.json")
    with pytest.raises(InputError, match="_Strict has no field 'vote'"):
        _Strict.from_dict({"score": 1.0, "vote": "x"})
    with pytest.raises(InputError, match="expected a JSON object"):
        _Strict.from_dict([1.0])  # type: ignore[arg-type]


def _render(obj: object) -> str:
    console = Console(file=io.StringIO(), width=100)
    console.print(obj)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_records_and_results_render_for_rich() -> None:
    text = _render(_Piece(0.123456, [{"value": 1.0}, {"value": 2.0}], extra={"vote": "w"}))
    assert "_Piece" in text and "0.1235" in text and "[2 items]" in text and "vote" in text
    result = Result(
        kind="separation",
        metrics={"split": "test", "layers": {"penultimate": {"r2": 0.25}}},
        model={"arch": "smallcnn", "objective": "softmax"},
        dataset={"label": "digits[0-9]"},
    )
    text = _render(result)
    assert "separation result" in text and "smallcnn softmax" in text
    assert "layers.penultimate.r2" in text and "0.25" in text and "digits[0-9]" in text


# --- probes: the array functions equal the CLI on the same rows --------------------------------


def _probe_data(with_val: bool) -> dict[str, tuple[Any, Any]]:
    from test_probe import blobs

    x, y = blobs(150, 5, 2.0, seed=21)
    x = x.astype("float32")  # what a store holds: the CLI reads these very values
    splits = {"train": (x[:90], y[:90]), "test": (x[90:], y[90:])}
    if with_val:
        splits = {"train": (x[:70], y[:70]), "val": (x[70:90], y[70:90]), "test": splits["test"]}
    return splits


@pytest.mark.parametrize("with_val", [False, True], ids=["held-out", "val-split"])
def test_probe_functions_equal_the_cli(tmp_path: Path, cli: Any, with_val: bool) -> None:
    import json

    from test_probe import write_store

    splits = _probe_data(with_val)
    store = write_store(tmp_path / "s.h5", splits)
    run = cli("probe", store, "--method", "all", "--grid", "7", "--json", "-q")
    assert run.code == 0, run.stderr
    record = json.loads(run.stdout)["metrics"]["layers"]["penultimate"]
    train, test = splits["train"], splits["test"]
    val = splits.get("val", (None, None))
    args = (*train, *test, *val)
    ours = {
        "linear": lossxfer.linear_probe(*args, grid=7, device="cpu"),
        "ridge": lossxfer.ridge_probe(*args, grid=7, device="cpu"),
        "knn": lossxfer.knn_probe(*args, device="cpu"),
    }
    for method, fit in ours.items():
        assert isinstance(fit, lossxfer.ProbeFit)
        assert fit.to_dict() == record[method], method
        assert lossxfer.ProbeFit.from_dict(record[method]) == fit
    assert 0.5 < ours["linear"].test_top1 <= 1 and len(ours["linear"].val_curve) == 7


def test_probe_functions_take_torch_tensors_and_check_their_input() -> None:
    import numpy as np
    import torch

    (x, y), (tx, ty) = _probe_data(False).values()
    from_numpy = lossxfer.knn_probe(x, y, tx, ty, device="cpu")
    from_torch = lossxfer.knn_probe(*map(torch.from_numpy, (x, y, tx, ty)), device="cpu")
    assert from_numpy == from_torch
    bad = x.copy()
    bad[0, 0] = np.inf
    cases = {
        "x_train has 1 NaN or infinite values": (bad, y, tx, ty),
        "x_test: expected rows × features": (x, y, tx[0], ty),
        "x_train: expected 90 labels": (x, y[:-1], tx, ty),
        "labels must be integers": (x, y.astype(float), tx, ty),
        "fewer than 2 classes to fit": (x, np.zeros_like(y), tx, ty),
        "different widths": (x, y, tx[:, :3], ty),
    }
    for message, args in cases.items():
        with pytest.raises(InputError, match=message):
            lossxfer.linear_probe(*args, grid=2, device="cpu")
    with pytest.raises(lossxfer.UsageError, match="did you mean 'linear'"):
        lossxfer.probe_features("linaer", x, y, tx, ty)
    with pytest.raises(lossxfer.UsageError, match="--grid must be at least 1"):
        lossxfer.linear_probe(x, y, tx, ty, grid=0)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), method=st.sampled_from(["linear", "ridge", "knn"]))
def test_probes_are_invariant_to_row_order(seed: int, method: str) -> None:
    """Permuting the rows of every split (val given) changes no choice and no accuracy."""
    import numpy as np

    data = _probe_data(True)
    rng = np.random.default_rng(seed)
    shuffled = {}
    for name, (x, y) in data.items():
        order = rng.permutation(len(y))
        shuffled[name] = (x[order], y[order])

    def run(d: dict[str, tuple[Any, Any]]) -> lossxfer.ProbeFit:
        options = lossxfer.ProbeOptions(grid=5)
        args = (*d["train"], *d["test"], *d["val"])
        return lossxfer.probe_features(method, *args, options=options, device="cpu")

    a, b = run(data), run(shuffled)
    assert (a.test_top1, a.test_mean_per_class, a.chosen) == (
        b.test_top1,
        b.test_mean_per_class,
        b.chosen,
    )
    assert [p["val_top1"] for p in a.val_curve] == [p["val_top1"] for p in b.val_curve]


# --- objectives and architectures -------------------------------------------------------------


def test_listing_objectives_and_architectures_imports_no_torch() -> None:
    code = (
        "import sys, lossxfer\n"
        "names = [o.name for o in lossxfer.list_objectives()]\n"
        "archs = [a.name for a in lossxfer.list_architectures()]\n"
        "print(names[0], archs[0], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["softmax", "smallcnn", "False"]


def test_list_objectives_gives_options_defaults_and_formula() -> None:
    infos = {o.name: o for o in lossxfer.list_objectives()}
    assert len(infos) == 9
    assert infos["label_smoothing"].options == {"alpha": 0.1, "rescale": True}
    assert infos["cosine_softmax"].options == {"tau": 0.05, "variant": "paper"}
    assert "beta·½‖z‖²" in infos["logit_penalty"].doc
    assert {"smallcnn", "resnet18", "resnet50"} <= {a.name for a in lossxfer.list_architectures()}


def test_create_objective_is_the_training_loss_with_its_head() -> None:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    l2 = lossxfer.create_objective("extra_final_layer_l2", 8, 4, lam=0.5)
    w = l2.head.weight
    assert isinstance(l2, torch.nn.Module) and w.shape == (4, 8)
    expected = F.cross_entropy(l2.head(x), y) + 0.5 * 0.5 * w.square().sum()
    assert torch.allclose(l2(x, y), expected)
    l2(x, y).backward()
    assert w.grad is not None  # the head trains with the loss
    penalty = lossxfer.create_objective("logit_penalty", 8, 4, beta="0.01")  # CLI strings too
    z = penalty.head(x)
    expected = F.cross_entropy(z, y) + 0.01 * 0.5 * z.square().sum(1).mean()
    assert torch.allclose(penalty(x, y), expected)
    cosine = lossxfer.create_objective("cosine_softmax", 8, 4)
    z = F.normalize(x) @ F.normalize(cosine.head.weight).T / 0.05 + cosine.head.bias
    assert torch.allclose(cosine.head(x), z, atol=1e-5)
    assert torch.equal(cosine.predict(x), z.argmax(1))
    assert "cosine_softmax(tau=0.05, variant=paper)" in repr(cosine)


def test_create_objective_rejects_unknown_names_and_options() -> None:
    with pytest.raises(lossxfer.UsageError, match="did you mean 'softmax'"):
        lossxfer.create_objective("sofmax", 8, 4)
    with pytest.raises(lossxfer.UsageError, match="unknown softmax option 'alpha'"):
        lossxfer.create_objective("softmax", 8, 4, alpha=0.1)
    with pytest.raises(lossxfer.UsageError, match="alpha must be in"):
        lossxfer.create_objective("label_smoothing", 8, 4, alpha=1.5)


# --- class separation ---------------------------------------------------------------------------


def _clustered(seed: int, sizes: tuple[int, ...] = (40, 25, 60), dim: int = 6) -> tuple[Any, Any]:
    import numpy as np
    from test_separation import clustered

    labels, x = clustered(np.random.default_rng(seed), list(sizes), dim, 0.8)
    return x, labels


def test_class_separation_equals_the_cli(tmp_path: Path, cli: Any) -> None:
    import json

    from test_separation import write_store

    x, labels = _clustered(1)
    x[:, 0] = 0  # a dead unit
    store = write_store(tmp_path / "s.h5", {"test": (labels, {"penultimate": x})})
    run = cli("separation", store, "--json", "-q")
    assert run.code == 0, run.stderr
    record = json.loads(run.stdout)["metrics"]["layers"]["penultimate"]
    ours = lossxfer.class_separation(x, labels)
    assert isinstance(ours, lossxfer.Separation)
    assert ours.to_dict() == record
    assert lossxfer.Separation.from_dict(record) == ours
    assert ours.dead_units == 1 and ours.classes == 3 and ours.rows == 125


def test_class_separation_matches_all_pairs_and_takes_torch() -> None:
    import torch
    from test_separation import brute_r2

    x, labels = _clustered(2)
    r2, d_within, d_total, per_class = brute_r2(x, labels)
    ours = lossxfer.class_separation(torch.from_numpy(x), torch.from_numpy(labels))
    assert ours.r2 == pytest.approx(r2, rel=1e-9)
    assert (ours.d_within, ours.d_total) == pytest.approx((d_within, d_total), rel=1e-9)
    assert ours.per_class_within == pytest.approx({str(k): v for k, v in per_class.items()})


def test_accumulator_merge_of_shards_equals_one_pass() -> None:
    import numpy as np

    x, labels = _clustered(3, sizes=(50, 30, 20, 45))
    x = x + 40.0  # a large common mean: the shards' covariance shifts differ a lot
    whole = lossxfer.class_separation(x, labels)
    # shard 1 lacks a class that shard 2 has; blocks of uneven size
    order = np.argsort(labels == labels.max(), kind="stable")
    x, labels = x[order], labels[order]
    shards = []
    for lo, hi in ((0, 37), (37, 90), (90, len(labels))):
        acc = lossxfer.SeparationAccumulator()
        for start in range(lo, hi, 16):
            acc.update(x[start : min(start + 16, hi)], labels[start : min(start + 16, hi)])
        shards.append(acc)
    empty = lossxfer.SeparationAccumulator()
    empty.update(x[:0], labels[:0])  # an empty block, even first, changes nothing
    merged = empty.merge(shards[0]).merge(shards[1]).merge(shards[2])
    got = merged.merge(lossxfer.SeparationAccumulator()).result()
    for key in ("r2", "d_within", "d_total", "sparsity", "effective_dim", "nc1"):
        assert getattr(got, key) == pytest.approx(getattr(whole, key), rel=1e-8), key
    assert got.class_rows == whole.class_rows and got.dead_units == whole.dead_units


def test_class_separation_checks_its_input() -> None:
    import numpy as np

    x, labels = _clustered(4)
    bad = x.copy()
    bad[7, 2] = np.nan
    cases = {
        "arrays row 7 is not finite": (bad, labels),
        "expected 125 labels": (x, labels[:-1]),
        "labels must be integers": (x, labels.astype(float)),
        "expected rows × features": (x[:, 0], labels),
        "at least 2 classes": (x, np.zeros_like(labels)),
    }
    for message, args in cases.items():
        with pytest.raises(InputError, match=message):
            lossxfer.class_separation(*args)
    with pytest.raises(lossxfer.UsageError, match="--block-rows"):
        lossxfer.class_separation(x, labels, block_rows=0)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    scale_exp=st.floats(-3, 3),
    relabel=st.permutations([3, 11, 7, 0]),
)
def test_r2_is_invariant_to_row_scaling_and_class_relabelling(
    seed: int, scale_exp: float, relabel: list[int]
) -> None:
    import numpy as np

    x, labels = _clustered(seed % 1000, sizes=(20, 15, 25, 10), dim=5)
    base = lossxfer.class_separation(x, labels)
    rng = np.random.default_rng(seed)
    scaled = x.astype(np.float64) * 10.0 ** (scale_exp + rng.uniform(-2, 2, (len(x), 1)))
    mapping = dict(zip(np.unique(labels).tolist(), relabel, strict=True))
    renamed = np.array([mapping[v] for v in labels.tolist()])
    for other in (lossxfer.class_separation(scaled, labels), lossxfer.class_separation(x, renamed)):
        assert other.r2 == pytest.approx(base.r2, rel=1e-6, abs=1e-9)
        assert other.d_within == pytest.approx(base.d_within, rel=1e-6, abs=1e-9)
        assert other.d_total == pytest.approx(base.d_total, rel=1e-6, abs=1e-9)


# --- extract_features ---------------------------------------------------------------------------


def test_extract_features_equals_the_cli_on_a_checkpoint(tmp_path: Path, cli: Any) -> None:
    import numpy as np
    import torch
    from test_checkpoint import make_checkpoint

    from lossxfer.checkpoint import load_checkpoint
    from lossxfer.data import load_data
    from lossxfer.store import open_store

    data = "synthetic:classes=3,size=8"
    ckpt = tmp_path / "m.safetensors"
    make_checkpoint(ckpt, "smallcnn", classes=(0, 1, 2), data=data)
    store = tmp_path / "acts.h5"
    layers = "block2,penultimate,logits"
    run = cli("extract", ckpt, "--data", data, "--split", "test", "--layers", layers,
              "--pool", "flatten", "-o", store, "-q")  # fmt: skip
    assert run.code == 0, run.stderr
    network, _ = load_checkpoint(ckpt)
    split = load_data(data, (0, 1, 2), 0.0).split("test")
    images, _ = split.dataset.tensors()
    labels = torch.from_numpy(split.labels)
    batches = [(images[i : i + 7], labels[i : i + 7]) for i in range(0, len(images), 7)]
    ours = lossxfer.extract_features(network, batches, layers.split(","), pool="flatten")
    assert isinstance(ours, lossxfer.Activations) and network.training  # left as found
    with open_store(store) as s:
        for layer in layers.split(","):
            np.testing.assert_array_equal(ours[layer], s.read("test", layer))
        np.testing.assert_array_equal(ours.labels, s.labels("test"))


def test_extract_features_of_any_module_by_module_path(tmp_path: Path) -> None:
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lossxfer.store import open_store

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    images, labels = torch.randn(10, 1, 6, 6), torch.arange(10) % 3
    model(images)  # materialise the lazy layer
    acts = lossxfer.extract_features(model, [images[:4], images[4:]], ["1", "3"])
    with torch.no_grad():
        relu = model[1](model[0](images))
        logits = model(images)
    np.testing.assert_allclose(acts["1"], relu.mean((2, 3)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(acts["3"], logits.numpy(), rtol=1e-6)
    assert acts.labels is None
    loader = DataLoader(TensorDataset(images, labels), batch_size=3)
    record = lossxfer.extract_features(model, {"train": loader, "test": loader}, ["1"],
                                       pool="flatten", out=tmp_path / "s.h5")  # fmt: skip
    assert record.kind == "extract" and record.metrics == {
        "splits": {"train": 10, "test": 10},
        "layers": {"1": 64},
    }
    with open_store(tmp_path / "s.h5") as s:
        np.testing.assert_allclose(s.read("test", "1"), relu.flatten(1).numpy(), rtol=1e-6)
        assert s.labels("train").tolist() == labels.tolist()
        assert s.layer_attrs("train", "1")["pool"] == "flatten"


def test_extract_features_rejects_bad_requests(tmp_path: Path) -> None:
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    x = torch.randn(4, 3)
    with pytest.raises(lossxfer.UsageError, match="unknown layer 'O'"):
        lossxfer.extract_features(model, [x], ["O"])
    with pytest.raises(lossxfer.UsageError, match="no named layers"):
        lossxfer.extract_features(model, [x], ["all"])
    with pytest.raises(lossxfer.UsageError, match="did you mean 'avg'"):
        lossxfer.extract_features(model, [x], ["0"], pool="avh")
    with pytest.raises(lossxfer.UsageError, match=r"rows=\{'train': N\}"):
        lossxfer.extract_features(model, [(x, torch.zeros(4))], ["0"], out=tmp_path / "a.h5")
    with pytest.raises(InputError, match="needs labels"):
        lossxfer.extract_features(model, [x], ["0"], out=tmp_path / "a.h5", rows={"train": 4})
    with pytest.raises(InputError, match="3 rows, not the 4 given"):
        lossxfer.extract_features(model, [(x[:3], torch.zeros(3))], ["0"], out=tmp_path / "a.h5",
                                  rows={"train": 4})  # fmt: skip
    assert not (tmp_path / "a.h5").exists()  # no partial store
