"""Models from elsewhere: `lossxfer import` of torchvision and timm networks (random weights,
saved with safetensors; nothing is downloaded), their named layers, and every bad-weights case."""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lossxfer.checkpoint import load_checkpoint
from lossxfer.data import load_data
from lossxfer.inputs import InputSpec
from lossxfer.store import open_store
from lossxfer.zoo import create_model, layer_paths

pytest.importorskip("timm")

# 2 prototype classes of 224 px RGB images, one of each in train and test
IMAGES = "synthetic:classes=2,size=224,channels=3,train=1,test=1"


def save_random(path: Path, source: str, name: str, num_classes: int = 10, seed: int = 0):
    """A randomly initialised outside model in eval mode, its state dict saved at `path`."""
    torch.manual_seed(seed)
    model = create_model(source, name)
    fc = model.get_classifier() if hasattr(model, "get_classifier") else model.fc
    if fc.out_features != num_classes:
        if hasattr(model, "reset_classifier"):
            model.reset_classifier(num_classes)
        else:
            model.fc = torch.nn.Linear(fc.in_features, num_classes)
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model.eval()


def own_outputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own pre-logits and logits: timm's forward_head(pre_logits=True), or the
    input of torchvision's classifier."""
    with torch.no_grad():
        if hasattr(model, "forward_head"):
            return model.forward_head(model.forward_features(x), pre_logits=True), model(x)
        seen = []
        handle = model.fc.register_forward_hook(lambda _m, i, _o: seen.append(i[0]))
        logits = model(x)
        handle.remove()
        return seen[0], logits


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch",
    [
        "torchvision:resnet18",
        "torchvision:resnet50",
        "timm:resnet50",
        "timm:convnext_atto",
        "timm:vit_tiny_patch16_224",
    ],
)
def test_extract_equals_the_models_own_pre_logits_and_logits(cli, tmp_path: Path, arch) -> None:
    source, name = arch.split(":")
    model = save_random(tmp_path / "w.safetensors", source, name)
    ckpt, store = tmp_path / "m.safetensors", tmp_path / "a.h5"
    run = cli("import", arch, "--weights", tmp_path / "w.safetensors", "-o", ckpt, "-q")
    assert run.code == 0, run.stderr
    run = cli("extract", ckpt, "--data", IMAGES, "--split", "test", "--workers", "0",
              "--layers", "penultimate,logits", "-o", store, "-q")  # fmt: skip
    assert run.code == 0, run.stderr
    _, meta = load_checkpoint(ckpt)
    data = dataclasses.replace(load_data(IMAGES, val_fraction=0.0), input=meta.input)
    test = data.split("test").dataset
    x = torch.stack([test[i][0] for i in range(len(test))])
    assert x.shape[1:] == (3, 224, 224)
    pre, logits = own_outputs(model, x)
    with open_store(store) as s:
        got_pre = torch.from_numpy(s.read("test", "penultimate"))
        got_logits = torch.from_numpy(s.read("test", "logits"))
    assert got_logits.shape == (2, 10)
    assert relative(got_pre, pre) <= 1e-5 and relative(got_logits, logits) <= 1e-5


@pytest.mark.parametrize(
    ("arch", "stem", "blocks", "first", "last"),
    [
        ("torchvision:resnet18", "relu", 8, "layer1.0", "layer4.1"),
        ("torchvision:resnet50", "relu", 16, "layer1.0", "layer4.2"),
        ("timm:resnet50", "act1", 16, "layer1.0", "layer4.2"),
        ("timm:convnext_atto", "stem", 12, "stages.0.blocks.0", "stages.3.blocks.1"),
        ("timm:vit_tiny_patch16_224", "norm_pre", 12, "blocks.0", "blocks.11"),
    ],
)
def test_named_layers_are_the_stem_and_every_block(arch, stem, blocks, first, last) -> None:
    with torch.device("meta"):
        model = create_model(*arch.split(":"))
    paths = layer_paths(model)
    assert list(paths) == ["stem", *(f"block{i + 1}" for i in range(blocks))]
    assert (paths["stem"], paths["block1"], paths[f"block{blocks}"]) == (stem, first, last)


@pytest.mark.slow
def test_every_verb_on_an_imported_model(cli, tmp_path: Path) -> None:
    """import → extract (digits: 8 px grey into a 224 px RGB model) → probe, separation, cka
    against a lossxfer model, finetune (new head), info, report."""
    from test_checkpoint import make_checkpoint

    save_random(tmp_path / "w.safetensors", "timm", "convnext_atto")
    ckpt = tmp_path / "imported" / "model.safetensors"
    run = cli("import", "timm:convnext_atto", "--weights", tmp_path / "w.safetensors", "--json",
              "--objective", "sigmoid", "--trained-on", "imagenet", "-o", ckpt)  # fmt: skip
    assert run.code == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["metrics"]["num_classes"] == 10 and record["model"]["objective"] == "sigmoid"
    assert record["metrics"]["layers"][:2] == ["stem", "block1"]
    ours = tmp_path / "ours.safetensors"
    make_checkpoint(ours, classes=tuple(range(10)), input_spec=InputSpec(1, 8, (0.3,), (0.38,)))
    stores = {}
    for label, path in (("imported", ckpt), ("ours", ours)):
        stores[label] = tmp_path / f"{label}.h5"
        run = cli("extract", path, "--data", "digits", "--limit", "24", "--workers", "0",
                  "--layers", "all" if label == "imported" else "penultimate,logits",
                  "-o", stores[label], "-q")  # fmt: skip
        assert run.code == 0, run.stderr
    with open_store(stores["imported"]) as s:
        assert s.layers("test") == ["stem", *(f"block{i}" for i in range(1, 13)),
                                    "penultimate", "logits"]  # fmt: skip
        assert s.read("test", "block12").shape == (24, 320)
    results = tmp_path / "results"
    results.mkdir()
    for verb, extra in (("probe", ("--method", "knn")), ("separation", ())):
        run = cli(verb, stores["imported"], "--layer", "penultimate", *extra,
                  "-o", results / f"{verb}.json", "-q")  # fmt: skip
        assert run.code == 0, run.stderr
    run = cli("cka", stores["imported"], stores["ours"], "--layers", "penultimate,logits",
              "--json", "-q")  # fmt: skip
    assert run.code == 0, run.stderr
    matrix = json.loads(run.stdout)["metrics"]["matrix"]
    assert len(matrix) == 2 and all(-1 <= v <= 1 for row in matrix for v in row)
    run = cli("finetune", ckpt, "--data", "digits", "--classes", "0-2", "--lr", "0.01",
              "--weight-decay", "0", "--steps", "1", "--batch-size", "4", "--no-refit",
              "--val-fraction", "0.02", "--workers", "0", "-o", tmp_path / "ft", "-q")  # fmt: skip
    assert run.code == 0, run.stderr
    tuned, tuned_meta = load_checkpoint(tmp_path / "ft" / "model.safetensors")
    assert tuned_meta.arch == "timm:convnext_atto" and tuned_meta.num_classes == 3
    assert tuned.head.weight.shape == (3, 320)
    run = cli("info", ckpt, "--json")
    assert run.code == 0 and json.loads(run.stdout)[0]["arch"] == "timm:convnext_atto"
    run = cli("report", results, "--format", "markdown")
    assert run.code == 0, run.stderr
    assert "| sigmoid |" in run.stdout and "skipped" not in run.stderr


def test_hugging_face_folder_and_contract_overrides(cli, tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    save_random(folder / "model.safetensors", "timm", "resnet18", num_classes=5)
    cfg = {"input_size": [3, 160, 160], "crop_pct": 0.9, "interpolation": "bilinear",
           "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # fmt: skip
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet18",
                                                    "pretrained_cfg": cfg}))  # fmt: skip
    out = tmp_path / "m.safetensors"
    run = cli("import", "timm:resnet18", "--weights", folder, "-o", out, "--classes", "5-9", "-q")
    assert run.code == 0, run.stderr
    _, meta = load_checkpoint(out)
    assert meta.input == InputSpec(3, 160, (0.5,) * 3, (0.25,) * 3, "bilinear", 0.9)
    assert meta.classes == [5, 6, 7, 8, 9] and meta.objective == "unknown" and meta.imported
    run = cli("import", "timm:resnet18", "--weights", folder, "-o", out, "--force", "-q",
              "--size", "192", "--crop", "1", "--interpolation", "bicubic",
              "--mean", "0.4,0.4,0.4")  # fmt: skip
    assert run.code == 0, run.stderr
    _, meta = load_checkpoint(out)
    assert meta.input == InputSpec(3, 192, (0.4,) * 3, (0.25,) * 3, "bicubic", 1.0)


def test_torchvision_contract_from_its_weight_metadata(tmp_path: Path) -> None:
    """Also: these weights' safetensors header length starts with byte 0x80, once mistaken for
    pickle's protocol mark."""
    from lossxfer.importer import import_model

    save_random(tmp_path / "w.safetensors", "torchvision", "resnet50", num_classes=1000)
    result = import_model("torchvision:resnet50", tmp_path / "w.safetensors", tmp_path / "m.st")
    # ResNet50_Weights.DEFAULT (IMAGENET1K_V2): resize 232, crop 224, bilinear
    assert result.metrics["input"]["size"] == 224
    assert result.metrics["input"]["crop"] == pytest.approx(224 / 232)
    assert result.metrics["input"]["interpolation"] == "bilinear"
    assert result.metrics["num_classes"] == 1000 and len(result.metrics["layers"]) == 19


@pytest.fixture
def weights(tmp_path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("torchvision", "resnet18")
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ("pth", 3, "never loads; convert it once"),
        ("bin", 3, "never loads; convert it once"),
        ("garbage", 3, "not a readable safetensors file"),
        ("missing", 3, "missing 'fc.bias'"),
        ("unexpected", 3, "unexpected 'extra.weight'"),
        ("both", 3, "missing 'conv1.weight'; unexpected 'conv0.weight'"),
        ("shape", 3, "tensor 'layer1.0.conv1.weight' has shape (64, 64, 1, 1)"),
        ("nan", 3, "holds NaN or infinity"),
        ("folder", 3, "no model.safetensors inside"),
        ("config", 3, "config.json describes 'resnet50'"),
        ("absent", 3, "no such file"),
    ],
)
def test_bad_weights_exit_3_naming_the_problem(cli, tmp_path, weights, change, code, message):
    path = tmp_path / "w.safetensors"
    arch = "torchvision:resnet18"
    if change in ("pth", "bin"):
        path = tmp_path / f"w.{change}"
        torch.save(weights, path) if change == "pth" else _save(path, weights)
    elif change == "garbage":
        path.write_bytes(b"not a tensor file at all")
    elif change == "missing":
        _save(path, {k: v for k, v in weights.items() if k != "fc.bias"})
    elif change == "unexpected":
        _save(path, {**weights, "extra.weight": torch.zeros(2)})
    elif change == "both":
        _save(path, {("conv0.weight" if k == "conv1.weight" else k): v for k, v in weights.items()})
    elif change == "shape":
        _save(path, {**weights, "layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    elif change == "nan":
        _save(path, {**weights, "fc.bias": torch.full((1000,), float("nan"))})
    elif change in ("folder", "config"):
        path = tmp_path / "hf"
        path.mkdir()
        arch = "timm:resnet18"
        if change == "config":
            _save(path / "model.safetensors", weights)
            (path / "config.json").write_text('{"architecture": "resnet50"}')
    elif change == "absent":
        path = tmp_path / "nothing.safetensors"
    out = tmp_path / "m.safetensors"
    run = cli("import", arch, "--weights", path, "-o", out)
    assert run.code == code and message in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert not out.exists()


def test_a_pickled_file_is_never_unpickled(cli, tmp_path, weights, monkeypatch) -> None:
    path = tmp_path / "w.pth"
    torch.save(weights, path)

    def refuse(*_a, **_k):
        raise AssertionError("unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    run = cli("import", "torchvision:resnet18", "--weights", path, "-o", tmp_path / "m.st")
    assert run.code == 3 and "safetensors.torch.save_file(torch.load('" in run.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("tim:resnet50", "--weights", "W"), 2, "source 'tim' (did you mean 'timm'?)"),
        (("timm:resnet5O", "--weights", "W"), 2, "unknown timm model 'resnet5O'"),
        (("torchvision:vgg16", "--weights", "W"), 2, "the ResNet family"),
        (("resnet50", "--weights", "W"), 2, "unknown model source"),
        (("torchvision:resnet18",), 2, "give either --weights"),
        (("torchvision:resnet18", "--weights", "W", "--download"), 2, "give either --weights"),
        (("torchvision:resnet18", "--weights", "W", "--objective", "sigmod"), 2,
         "did you mean 'sigmoid'?"),
        (("torchvision:resnet18", "--weights", "W", "--classes", "0-9"), 2, "1000 outputs"),
        (("torchvision:resnet18", "--weights", "W", "--crop", "1.5"), 2, "--crop 1.5"),
        (("torchvision:resnet18", "--weights", "W", "--mean", "0.5"), 2, "1 values for 3"),
        (("torchvision:resnet18", "--weights", "W", "--interpolation", "cubic"), 2,
         "did you mean 'bicubic'?"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(cli, tmp_path, weights, args, code, message) -> None:
    w = _save(tmp_path / "w.safetensors", weights)
    args = tuple(str(w) if a == "W" else a for a in args)
    run = cli("import", *args, "-o", tmp_path / "m.safetensors")
    assert run.code == code and message in run.stderr, run.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_existing_output_needs_force(cli, tmp_path, weights) -> None:
    w = _save(tmp_path / "w.safetensors", weights)
    out = tmp_path / "m.safetensors"
    out.write_text("keep")
    run = cli("import", "torchvision:resnet18", "--weights", w, "-o", out)
    assert run.code == 2 and "--force" in run.stderr and out.read_text() == "keep"


def test_timm_missing_is_exit_4(cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    run = cli("import", "timm:resnet50", "--weights", tmp_path / "w.safetensors", "-o",
              tmp_path / "m.safetensors")  # fmt: skip
    assert run.code == 4 and "pip install 'lossxfer[zoo]'" in run.stderr


def test_vit_token_layers_pool_over_tokens() -> None:
    """A transformer block's N × T × D output averages over its T tokens (→ N × D)."""
    from lossxfer.activations import pool_activation

    tokens = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    assert torch.equal(pool_activation(tokens, "avg"), tokens.mean(dim=1))
    assert pool_activation(tokens, "flatten").shape == (2, 12)
