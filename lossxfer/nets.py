"""Network modules behind the architecture registry (imported only when a model is built)."""

from __future__ import annotations

import itertools

import torch
from torch import nn


class Backbone(nn.Module):
    """Images → penultimate features (N × feature_dim), with hookable named layers.

    Subclasses build `stem`, `blocks` (in forward order) and `pool`; the forward pass and the
    layer names (`stem`, `block1`…`blockN`, docs/method.md §3) are the same for all of them.
    """

    feature_dim: int
    stem: nn.Module
    blocks: nn.ModuleList
    pool: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return torch.flatten(self.pool(x), 1)

    def named_layers(self) -> dict[str, nn.Module]:
        """`stem`, `block1`…`blockN` in forward order → the module whose output is that layer."""
        return {"stem": self.stem, **{f"block{i + 1}": b for i, b in enumerate(self.blocks)}}

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
        """Every named layer (docs/method.md §3) → the module whose output is its activation."""
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


class ResNet(Backbone):
    """A torchvision ResNet as a backbone: stem → residual blocks → final ReLU → global avg pool.

    Post-activation ResNet v1 with the stride of a downsampling bottleneck in its 3×3 conv
    (torchvision's layout, which it calls "v1.5"; this is docs/method.md §2's "ResNet-50 v1 (stride
    2 in the 3×3 conv)", as in the paper's released code). Paper init: the last BatchNorm γ of
    every residual block starts at zero; BatchNorm momentum 0.1 (PyTorch convention = TF 0.9),
    eps 1e-5. Inputs ≤ 64 px get the CIFAR stem (3×3 conv, stride 1, no max pool), larger ones
    the ImageNet stem (7×7 conv, stride 2, 3×3 max pool).

    Named layers: `stem` (64 channels), then `block1`…`blockN`, the output of each residual
    block in order (ResNet-18: 8 blocks of 64, 64, 128, 128, 256, 256, 512, 512 channels;
    ResNet-50: 16 blocks, 3 × 256, 4 × 512, 6 × 1024, 3 × 2048). Each stage after the first
    halves the spatial size.
    """

    def __init__(self, depth: int, in_channels: int, size: int) -> None:
        from torchvision.models import resnet18, resnet50

        from lossxfer.inputs import SMALL_IMAGE

        builder = {18: resnet18, 50: resnet50}[depth]
        net = builder(weights=None, zero_init_residual=True)
        super().__init__()
        if size <= SMALL_IMAGE:
            conv = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            pool: nn.Module = nn.Identity()
        else:
            conv = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            pool = net.maxpool
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.stem = nn.Sequential(conv, net.bn1, net.relu, pool)
        self.blocks = nn.ModuleList(
            block for stage in (net.layer1, net.layer2, net.layer3, net.layer4) for block in stage
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = net.fc.in_features


class OutsideBackbone(Backbone):
    """A torchvision or timm network without its classifier, as a lossxfer backbone.

    forward(x) gives the pooled pre-logit features: timm's `forward_head(forward_features(x),
    pre_logits=True)` (the class token after the final norm for ViTs), or for torchvision the
    network itself with its classifier replaced by an identity. `layers` maps `stem`,
    `block1`…`blockN` to module paths inside `model` (lossxfer/zoo.py finds them), so no module
    is registered twice and the state dict is the model's own, under `model.`.
    """

    def __init__(self, model: nn.Module, layers: dict[str, str], feature_dim: int) -> None:
        super().__init__()
        self.model = model
        self.layer_paths = dict(layers)
        self.feature_dim = feature_dim
        self.timm_head = callable(getattr(model, "forward_head", None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.timm_head:
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)  # type: ignore[operator]
        return self.model(x)

    def named_layers(self) -> dict[str, nn.Module]:
        return {name: self.model.get_submodule(path) for name, path in self.layer_paths.items()}
