"""Network modules behind the architecture registry (imported only when a model is built)."""

from __future__ import annotations

import itertools

import torch
from torch import nn


class Backbone(nn.Module):
    """Images → penultimate features (N × feature_dim), with hookable named layers."""

    feature_dim: int

    def named_layers(self) -> dict[str, nn.Module]:
        """`stem`, `block1`…`blockN` in forward order → the module whose output is that layer."""
        raise NotImplementedError

    def layer_names(self) -> list[str]:
        return list(self.named_layers())


class Network(nn.Module):
    """Backbone + objective head. forward(x) returns the logits z."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def layer_names(self) -> list[str]:
        return list(self.named_layers())

    def named_layers(self) -> dict[str, nn.Module]:
        """Every named layer (REFERENCE.md §3) → the module whose output is its activation."""
        return {**self.backbone.named_layers(), "penultimate": self.backbone, "logits": self.head}


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(Backbone):
    """stem (32) → block1 (64) → block2 (128, stride 2) → block3 (256, stride 2) → avg pool."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, widths[0])
        self.blocks = nn.ModuleList(
            conv_bn_relu(cin, cout, stride=1 if i == 0 else 2)
            for i, (cin, cout) in enumerate(itertools.pairwise(widths))
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return torch.flatten(self.pool(x), 1)

    def named_layers(self) -> dict[str, nn.Module]:
        return {"stem": self.stem, **{f"block{i + 1}": b for i, b in enumerate(self.blocks)}}
