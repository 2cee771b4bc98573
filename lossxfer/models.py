"""Architectures (docs/method.md §3): a registry of backbone builders, and the full network.

A backbone maps images to the penultimate features x and exposes its named layers (`stem`,
`block1`…`blockN`) for forward hooks; the objective builds the head, so `Network` = backbone +
head, and its named layers add `penultimate` (backbone output) and `logits` (head output,
before any scaling done in the loss). Builders import torch only when called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from lossxfer.inputs import InputSpec
from lossxfer.registry import Registry

if TYPE_CHECKING:
    from lossxfer.nets import Backbone, Network
    from lossxfer.objectives import Objective

ARCHS: Registry[Callable[[InputSpec], Backbone]] = Registry("architecture")


@ARCHS.register("smallcnn")
def smallcnn(spec: InputSpec) -> Backbone:
    """Four 3×3 conv–BN–ReLU stages (32-64-128-256 channels); fast on a CPU for ≤ 32 px."""
    from lossxfer.nets import SmallCNN

    return SmallCNN(spec.channels)


@ARCHS.register("resnet18")
def resnet18(spec: InputSpec) -> Backbone:
    """ResNet-18 (torchvision, random init): stem, block1…block8, 512-d penultimate features."""
    from lossxfer.nets import ResNet

    return ResNet(18, spec.channels, spec.size)


@ARCHS.register("resnet50")
def resnet50(spec: InputSpec) -> Backbone:
    """ResNet-50 (torchvision, random init): stem, block1…block16, 2048-d penultimate features."""
    from lossxfer.nets import ResNet

    return ResNet(50, spec.channels, spec.size)


class ArchInfo(NamedTuple):
    """One architecture for docs and notebooks: its key and its one-line description."""

    name: str
    doc: str


def list_architectures() -> list[ArchInfo]:
    """Every registered architecture in registry order; imports no torch."""
    return [
        ArchInfo(name, (ARCHS.get(name).__doc__ or "").strip().splitlines()[0])
        for name in ARCHS.names()
    ]


def build_network(
    arch: str, spec: InputSpec, objective: Objective | None, num_classes: int
) -> Network:
    """Backbone of `arch` for inputs of `spec`, with the head that `objective` builds.

    `arch` is a registered name or a model from elsewhere (`timm:resnet50`, lossxfer/zoo.py);
    `objective` None: a plain linear head (an imported model's own classifier, whose objective
    is only a label).
    """
    from torch import nn

    from lossxfer.nets import Network
    from lossxfer.zoo import is_outside, outside_backbone

    backbone = outside_backbone(arch)[0] if is_outside(arch) else ARCHS.get(arch)(spec)
    if objective is None:
        return Network(backbone, nn.Linear(backbone.feature_dim, num_classes))
    return Network(backbone, objective.build_head(backbone.feature_dim, num_classes))
