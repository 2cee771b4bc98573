"""Models from elsewhere: torchvision and timm networks as ordinary lossxfer checkpoints.

An outside architecture is named SOURCE:NAME (`timm:resnet50`, `timm:convnext_atto`,
`timm:vit_tiny_patch16_224`, `torchvision:resnet18`). `import_model` reads its weights from a
safetensors file or a Hugging Face model folder (model.safetensors + config.json), checks them
strictly against the architecture and writes a lossxfer checkpoint: the network split into a
backbone (the pooled pre-logit features, `penultimate`) and its own linear classifier
(`logits`); the input contract (size, mean/std, interpolation, crop) from timm's
`pretrained_cfg` or torchvision's weight metadata, overridable; the class count; an objective
label (`unknown` unless given) that only groups the model in reports.

Named layers: `stem` and `block1`…`blockN`, one per residual / ConvNeXt / transformer block,
found through timm's `feature_info` (torchvision: the ResNet stages). Nothing is ever
unpickled (`.pth`/`.bin`/`.ckpt` are refused with how to convert them), and the network is
reached only with `download=True`.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossxfer.errors import DeviceError, InputError, UsageError
from lossxfer.inputs import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, InputSpec
from lossxfer.registry import check_choice

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lossxfer.nets import OutsideBackbone
    from lossxfer.results import Result

SOURCES = ("timm", "torchvision")
PICKLED = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".tar")
TORCHVISION_FAMILY = ("resnet", "resnext", "wide_resnet")  # the named-layer map covers these


def is_outside(arch: str) -> bool:
    """`timm:…` and `torchvision:…` architectures come from elsewhere; registered names do not."""
    return ":" in arch


def parse_arch(arch: str) -> tuple[str, str]:
    """'timm:resnet50' → ('timm', 'resnet50'); an unknown source → UsageError (exit 2)."""
    source, _, name = arch.partition(":")
    check_choice("model source", source, SOURCES)
    if not name:
        raise UsageError(f"{arch!r}: expected SOURCE:NAME, e.g. timm:resnet50")
    return source, name


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise DeviceError(
            "timm models need timm, which is not installed: pip install 'lossxfer[zoo]'"
        ) from None
    return timm


def create_model(source: str, name: str, pretrained: bool = False) -> nn.Module:
    """The outside network, randomly initialised (or with its published weights: network)."""
    if source == "timm":
        timm = _timm()
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise UsageError(f"unknown timm model {name!r}{hint}; timm.list_models() lists them")
        try:
            return timm.create_model(name, pretrained=pretrained)
        except (OSError, RuntimeError) as exc:  # download failures, missing pretrained tags
            raise InputError(f"timm:{name}: cannot get the weights: {exc}") from None
    from torchvision import models

    names = [n for n in models.list_models(module=models) if n.startswith(TORCHVISION_FAMILY)]
    check_choice("torchvision model (the ResNet family; timm has the others)", name, names)
    try:
        return models.get_model(name, weights="DEFAULT" if pretrained else None)
    except (OSError, RuntimeError) as exc:
        raise InputError(f"torchvision:{name}: cannot get the weights: {exc}") from None


def classifier_path(model: nn.Module) -> str:
    """Module path of the final linear layer (timm's `get_classifier()`, torchvision's `fc`)."""
    get = getattr(model, "get_classifier", None)
    target = get() if callable(get) else getattr(model, "fc", None)
    path = next((n for n, m in model.named_modules() if n and m is target), None)
    if path is None:
        raise UsageError(f"{type(model).__name__}: no classifier to split off")
    return path


def layer_paths(model: nn.Module) -> dict[str, str]:
    """`stem`, `block1`…`blockN` → module paths, in forward order.

    timm: each `feature_info` entry is a stage (its blocks are the Sequential's children, or
    its `.blocks`), a single block (ViT's `blocks.i`), or, before any block, the stem (ResNet's
    `act1`, stride 2, before the max pool); models whose stem is not listed use `stem`
    (ConvNeXt) or `norm_pre` (ViT: the tokens entering block 1, class token and position
    embedding included). torchvision ResNets: `relu` (the same point as timm's `act1`), then
    every block of `layer1`…`layer4`.
    """
    from torch import nn

    modules = dict(model.named_modules())
    info = getattr(model, "feature_info", None)
    if info is None:  # torchvision's ResNet family
        stages = [modules[f"layer{i}"] for i in range(1, 5)]
        blocks = [f"layer{s + 1}.{i}" for s, stage in enumerate(stages) for i in range(len(stage))]
        return {"stem": "relu", **{f"block{i + 1}": p for i, p in enumerate(blocks)}}
    stem: str | None = None
    blocks = []
    for entry in info:
        path = str(entry["module"])
        module = modules[path]
        inner = getattr(module, "blocks", None)
        if isinstance(inner, nn.Sequential):
            blocks += [f"{path}.blocks.{i}" for i in range(len(inner))]
        elif isinstance(module, nn.Sequential) and len(module):
            blocks += [f"{path}.{i}" for i in range(len(module))]
        elif blocks or "block" in path:
            blocks.append(path)
        elif stem is None:
            stem = path
    stem = stem or next((p for p in ("stem", "norm_pre", "patch_embed") if p in modules), None)
    if stem is None or not blocks:
        raise UsageError(f"{type(model).__name__}: cannot map its stem and blocks")
    return {"stem": stem, **{f"block{i + 1}": p for i, p in enumerate(blocks)}}


def split_network(model: nn.Module) -> tuple[OutsideBackbone, nn.Linear]:
    """(backbone, classifier): the classifier is replaced by an identity inside the model, so
    its weights live once, in the head."""
    from torch import nn

    from lossxfer.nets import OutsideBackbone

    path = classifier_path(model)
    head = model.get_submodule(path)
    if not isinstance(head, nn.Linear):
        raise UsageError(f"{type(model).__name__}: its classifier is a {type(head).__name__}")
    layers = layer_paths(model)
    model.set_submodule(path, nn.Identity())
    return OutsideBackbone(model, layers, head.in_features), head


def outside_backbone(arch: str) -> tuple[OutsideBackbone, nn.Linear]:
    """A randomly initialised outside architecture, split (checkpoints rebuild through this)."""
    return split_network(create_model(*parse_arch(arch)))


def read_weights(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """(tensors, config.json or {}, the safetensors file) of a file or Hugging Face folder."""
    from lossxfer.checkpoint import load_tensors
    from lossxfer.fsio import require_file
    from lossxfer.sniff import KINDS, PICKLE_ADVICE, sniff

    p = Path(path).expanduser()
    config: dict[str, Any] = {}
    if p.is_dir():
        folder, p = p, p / "model.safetensors"
        if not p.is_file():
            raise InputError(f"{folder}: no model.safetensors inside (a Hugging Face model folder "
                             "holds model.safetensors and config.json)")  # fmt: skip
        if (folder / "config.json").is_file():
            try:
                config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"{folder / 'config.json'}: not readable JSON ({exc})") from None
            if not isinstance(config, dict):
                raise InputError(f"{folder / 'config.json'}: not a JSON object")
    require_file(p)
    if p.suffix.lower() in PICKLED or sniff(p) == "pickle":
        advice = PICKLE_ADVICE.replace("PATH", repr(str(p)))
        raise InputError(f"{p}: {KINDS['pickle'][0]}; {advice}")
    tensors, _ = load_tensors(p)
    if tensors and all(k.startswith("module.") for k in tensors):  # saved from DataParallel
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors, config, p


def check_weights(
    path: Path, arch: str, model: nn.Module, tensors: dict[str, torch.Tensor]
) -> None:
    """Strict: the same tensor names and shapes as the architecture, finite values; else exit 3
    naming the first missing and the first unexpected key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        parts = [
            f"{what} {keys[0]!r}" + (f" (+{len(keys) - 1} more)" if len(keys) > 1 else "")
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise InputError(f"{path}: the weights do not match {arch}: {'; '.join(parts)}")
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise InputError(f"{path}: tensor {key!r} has shape {tuple(value.shape)}, {arch} "
                             f"needs {tuple(expected[key].shape)}")  # fmt: skip
        if value.is_floating_point() and not bool(value.isfinite().all()):
            raise InputError(f"{path}: tensor {key!r} holds NaN or infinity")


def input_contract(source: str, name: str, model: nn.Module, config: dict[str, Any]) -> InputSpec:
    """What the model was made to see: timm's `pretrained_cfg` (updated by a Hugging Face
    config.json's), or the evaluation transform of torchvision's default weights."""
    if source == "timm":
        cfg = {**dict(getattr(model, "pretrained_cfg", {}) or {}),
               **dict(config.get("pretrained_cfg") or {})}  # fmt: skip
        channels, size = int(cfg["input_size"][0]), int(cfg["input_size"][-1])
        interpolation = str(cfg.get("interpolation", "bicubic"))
        return InputSpec(
            channels, size, tuple(cfg.get("mean", IMAGENET_MEAN)),
            tuple(cfg.get("std", IMAGENET_STD)),
            interpolation if interpolation in INTERPOLATIONS else "bicubic",
            float(cfg.get("crop_pct", 0.875)),
        )  # fmt: skip
    from torchvision import models

    preset = models.get_model_weights(name).DEFAULT.transforms
    defaults = {k: p.default for k, p in inspect.signature(preset.func).parameters.items()}
    values = {**defaults, **preset.keywords}
    crop, resize = int(values["crop_size"]), int(values["resize_size"])
    return InputSpec(3, crop, tuple(values["mean"]), tuple(values["std"]),
                     values["interpolation"].value, crop / resize)  # fmt: skip


def override_contract(spec: InputSpec, **changes: Any) -> InputSpec:
    """The contract with the options the user gave (None: keep), each checked (exit 2)."""
    import dataclasses

    given: dict[str, Any] = {
        k: tuple(v) if isinstance(v, (list, tuple)) else v
        for k, v in changes.items()
        if v is not None
    }
    out = dataclasses.replace(spec, **given)
    if out.size < 1:
        raise UsageError(f"--size {out.size}: must be at least 1 pixel")
    check_choice("interpolation", out.interpolation, INTERPOLATIONS)
    if not 0 < out.crop <= 1:
        raise UsageError(f"--crop {out.crop}: expected a fraction in (0, 1]")
    for what, values in (("mean", out.mean), ("std", out.std)):
        if len(values) != out.channels:
            raise UsageError(f"--{what}: {len(values)} values for {out.channels} channels")
    if any(v <= 0 for v in out.std):
        raise UsageError("--std: every value must be positive")
    return out


def import_model(
    model: str,
    weights: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    objective: str = "unknown",
    classes: Sequence[int] | None = None,
    trained_on: str = "unknown",
    size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str | None = None,
    crop: float | None = None,
    download: bool = False,
    force: bool = False,
) -> Result:
    """Turn a torchvision or timm model into a lossxfer checkpoint at `out`; the `import` record.

    `weights`: a safetensors file or a Hugging Face model folder; `download=True` instead takes
    the published weights (the only use of the network). The class count is the classifier's
    row count in the weights; `classes` names their source class ids (default 0…K−1).
    """
    from lossxfer.checkpoint import CheckpointMeta, save_checkpoint
    from lossxfer.fsio import check_output, sha256
    from lossxfer.nets import Network
    from lossxfer.objectives import OBJECTIVES
    from lossxfer.results import Result, input_record

    started = time.perf_counter()
    check_output(out, force)
    source, name = parse_arch(model)
    if source == "timm":
        _timm()  # exit 4 before any work when timm is missing
    arch = f"{source}:{name}"
    check_choice("objective", objective, ["unknown", *OBJECTIVES.names()])
    if (weights is None) != download:
        raise UsageError("give either --weights FILE.safetensors (or a Hugging Face model folder) "
                         "or --download (the published weights)")  # fmt: skip
    tensors, config, path = read_weights(weights) if weights is not None else ({}, {}, None)
    if source == "timm" and config.get("architecture") not in (None, name.split(".")[0]):
        raise InputError(f"{path}: config.json describes {config['architecture']!r}, not {name!r}")
    net = create_model(source, name, pretrained=download)
    if path is not None:
        _fit_classifier(net, tensors)
        check_weights(path, arch, net, tensors)
        net.load_state_dict(tensors, strict=True)
    contract = override_contract(
        input_contract(source, name, net, config), size=size, mean=mean, std=std,
        interpolation=interpolation, crop=crop,
    )  # fmt: skip
    backbone, head = split_network(net)
    network = Network(backbone, head).eval()
    ids = list(classes) if classes is not None else list(range(head.out_features))
    if len(ids) != head.out_features or len(set(ids)) != len(ids):
        raise UsageError(f"--classes: {len(ids)} distinct ids needed for the "
                         f"{head.out_features} outputs of the classifier")  # fmt: skip
    weights_record = input_record(path) if path is not None else None
    meta = CheckpointMeta(
        arch=arch, objective=objective, objective_opts={}, num_classes=len(ids), classes=ids,
        input=contract, data={"spec": trained_on, "label": trained_on, "classes": ids}, seed=0,
        config={"source": source, "name": name, "download": download},
        extra={"import": {"source": source, "name": name, "weights": weights_record,
                          "layers": network.layer_names()}},
    )  # fmt: skip
    save_checkpoint(out, network, meta, force)
    return Result(
        kind="import",
        metrics={
            "num_classes": len(ids),
            "layers": network.layer_names(),
            "parameters": sum(p.numel() for p in network.parameters()),
            "input": contract.to_dict(),
        },
        config={
            "model": arch,
            "weights": str(path) if path else None,
            "out": str(out),
            "objective": objective,
            "trained_on": trained_on,
            "download": download,
        },
        inputs=[weights_record] if weights_record else [],
        model=meta.provenance(sha256(out)),
        timing={"wall_s": time.perf_counter() - started},
    )


def _fit_classifier(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Give the classifier the row count of the weights' classifier (their class count)."""
    from torch import nn

    path = classifier_path(model)
    head = model.get_submodule(path)
    found = tensors.get(f"{path}.weight")
    if isinstance(head, nn.Linear) and found is not None and found.ndim == 2:
        rows = int(found.shape[0])
        if rows != head.out_features:
            model.set_submodule(path, nn.Linear(head.in_features, rows))
