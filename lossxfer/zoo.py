"""Models from elsewhere: torchvision and timm architectures as lossxfer networks.

An outside architecture is named SOURCE:NAME (`timm:resnet50`, `timm:convnext_atto`,
`timm:vit_tiny_patch16_224`, `torchvision:resnet18`). It is split into a backbone (the pooled
pre-logit features, `penultimate`) and its own linear classifier (`logits`); its input
contract (size, mean/std, interpolation, crop) comes from timm's `pretrained_cfg` or
torchvision's weight metadata. Named layers: `stem` and `block1`…`blockN`, one per residual /
ConvNeXt / transformer block, found through timm's `feature_info` (torchvision: the ResNet
stages). Checkpoints rebuild outside networks through this module; lossxfer/importer.py turns
their weights into checkpoints (`lossxfer import`).
"""

from __future__ import annotations

import difflib
import inspect
from typing import TYPE_CHECKING, Any

from lossxfer.errors import DeviceError, InputError, UsageError
from lossxfer.inputs import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, InputSpec
from lossxfer.registry import check_choice

if TYPE_CHECKING:
    from torch import nn

    from lossxfer.nets import OutsideBackbone

SOURCES = ("timm", "torchvision")

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


def require_timm() -> Any:
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
        timm = require_timm()
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
