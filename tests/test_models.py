"""Architectures: documented named-layer shapes, paper initialisation, registry errors."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from lossxfer.errors import UsageError
from lossxfer.inputs import InputSpec
from lossxfer.models import ARCHS, build_network
from lossxfer.objectives import make_objective

# Documented widths (models.py / nets.py docstrings) and each layer's downsampling relative to
# the stem output. The stem keeps the input size for ≤ 64 px (CIFAR stem), quarters it above.
WIDTHS = {
    "smallcnn": {"stem": 32, "block1": 64, "block2": 128, "block3": 256},
    "resnet18": {"stem": 64, **{f"block{i + 1}": w for i, w in enumerate([64, 64, 128, 128,
                 256, 256, 512, 512])}},
    "resnet50": {"stem": 64, **{f"block{i + 1}": w for i, w in enumerate([256] * 3 + [512] * 4
                 + [1024] * 6 + [2048] * 3)}},
}  # fmt: skip
DOWN = {
    "smallcnn": [1, 1, 2, 4],
    "resnet18": [1, 1, 1, 2, 2, 4, 4, 8, 8],
    "resnet50": [1] + [1] * 3 + [2] * 4 + [4] * 6 + [8] * 3,
}
FEATURES = {"smallcnn": 256, "resnet18": 512, "resnet50": 2048}


def spec(size: int, channels: int = 3) -> InputSpec:
    return InputSpec(channels, size, (0.5,) * channels, (0.25,) * channels)


@functools.cache
def network(arch: str, size: int) -> nn.Module:
    """One network per (arch, stem kind): every input size ≤ 64 px builds the same model."""
    return build_network(arch, spec(max(size, 32)), make_objective("softmax"), num_classes=7)


def layer_shapes(network: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))
        )
        for name, module in network.named_layers().items()
    ]
    with torch.no_grad():
        network.eval()(x)
    for hook in hooks:
        hook.remove()
    return shapes


CASES = [(arch, size) for arch in WIDTHS for size in (8, 32, 224)]


@pytest.mark.parametrize(
    ("arch", "size"),
    [
        pytest.param(a, s, marks=pytest.mark.slow) if (a, s) == ("resnet50", 224) else (a, s)
        for a, s in CASES
    ],
)
def test_named_layers_have_documented_shapes(arch: str, size: int) -> None:
    net = network(arch, size)
    shapes = layer_shapes(net, torch.rand(1, 3, size, size))
    stem_size = size if size <= 64 or arch == "smallcnn" else size // 4
    expected = {
        name: (width, stem_size // down, stem_size // down)
        for (name, width), down in zip(WIDTHS[arch].items(), DOWN[arch], strict=True)
    }
    expected |= {"penultimate": (FEATURES[arch],), "logits": (7,)}
    assert shapes == expected
    assert list(shapes) == net.layer_names()  # hooks fired in the documented order


def test_grayscale_input_and_single_image_batch() -> None:
    network = build_network("resnet18", spec(8, channels=1), make_objective("softmax"), 3)
    assert network.eval()(torch.rand(1, 1, 8, 8)).shape == (1, 3)


@pytest.mark.parametrize(("arch", "last_bn"), [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_paper_initialisation(arch: str, last_bn: str) -> None:
    backbone = network(arch, 32).backbone
    blocks = backbone.named_layers()
    assert len(blocks) - 1 == (8 if arch == "resnet18" else 16)
    for name, block in blocks.items():
        if name == "stem":
            continue
        last = getattr(block, last_bn)
        assert torch.count_nonzero(last.weight) == 0, f"{name}.{last_bn} γ is not zero"
        assert torch.all(block.bn1.weight == 1)
    bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.1 and m.eps == 1e-5 for m in bns)


def test_zero_init_blocks_pass_the_identity_through() -> None:
    """With γ = 0 a block without downsampling is ReLU(input): the point of the paper's init."""
    backbone = ARCHS.get("resnet18")(spec(32)).eval()
    x = torch.rand(2, 64, 8, 8) - 0.5
    with torch.no_grad():
        assert torch.equal(backbone.blocks[0](x), torch.relu(x))


@pytest.mark.parametrize(("size", "kernel", "stride", "pool"), [(32, 3, 1, nn.Identity),
                         (64, 3, 1, nn.Identity), (65, 7, 2, nn.MaxPool2d)])  # fmt: skip
def test_stem_depends_on_input_size(size: int, kernel: int, stride: int, pool: type) -> None:
    stem = ARCHS.get("resnet18")(spec(size)).stem
    assert stem[0].kernel_size == (kernel, kernel)
    assert stem[0].stride == (stride, stride)
    assert isinstance(stem[3], pool)


def test_unknown_arch_suggests_a_name() -> None:
    with pytest.raises(UsageError, match=r"unknown architecture 'resnet5' \(did you mean") as err:
        ARCHS.get("resnet5")
    assert err.value.exit_code == 2
    assert ARCHS.names()[:3] == ["smallcnn", "resnet18", "resnet50"]


def test_unknown_arch_on_the_command_line_is_exit_2(cli, tmp_path) -> None:
    run = cli(
        "train", "--data", "digits", "--arch", "resnet5", "--loss", "softmax", "-o", tmp_path / "r"
    )
    assert run.code == 2
    assert "unknown architecture 'resnet5' (did you mean 'resnet50'?)" in run.stderr
    assert not (tmp_path / "r").exists()


def test_import_of_models_stays_light() -> None:
    import subprocess
    import sys

    code = "import sys, lossxfer.models; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
