"""Device resolution and the CPU thread policy."""

from __future__ import annotations

import pytest
import torch

from lossxfer.backend import PARALLEL_FLOPS, cpu_threads, forward_flops, resolve_device
from lossxfer.data import InputSpec
from lossxfer.errors import DeviceError, UsageError
from lossxfer.models import build_network
from lossxfer.nets import Network
from lossxfer.objectives import make_objective

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _net(arch: str, channels: int, size: int) -> Network:
    spec = InputSpec(channels, size, (0.5,) * channels, (0.3,) * channels)
    return build_network(arch, spec, make_objective("softmax"), 10)


def test_forward_flops_counts_every_conv_and_linear_by_hand() -> None:
    """smallcnn on 8 px, 1 channel: 3×3 convs 1→32 (8²), 32→64 (8²), 64→128 (4²), 128→256 (2²)."""
    macs = 8 * 8 * 32 * 9 * 1 + 8 * 8 * 64 * 9 * 32 + 4 * 4 * 128 * 9 * 64 + 2 * 2 * 256 * 9 * 128
    macs += 256 * 10  # the head
    net = _net("smallcnn", 1, 8).train()
    assert forward_flops(net, (1, 8, 8)) == 2 * macs
    assert net.training  # restored


def test_auto_uses_one_thread_for_cheap_models_and_restores() -> None:
    torch.set_num_threads(2)
    net = _net("smallcnn", 1, 8)
    with cpu_threads(CPU, None, net, (1, 8, 8)) as used:
        assert torch.get_num_threads() == used == 1
    assert torch.get_num_threads() == 2


def test_auto_leaves_costly_models_to_torch_whatever_the_image_size() -> None:
    """resnet18 on 32 px images costs 1.1 GFLOP per image: every core pays off."""
    torch.set_num_threads(2)
    net = _net("resnet18", 3, 32)
    assert forward_flops(net, (3, 32, 32)) > PARALLEL_FLOPS
    with cpu_threads(CPU, None, net, (3, 32, 32)) as used:
        assert torch.get_num_threads() == used == 2


def test_explicit_count_and_zero() -> None:
    torch.set_num_threads(1)
    net = _net("smallcnn", 1, 8)
    with cpu_threads(CPU, 2, net, (1, 8, 8)) as used:
        assert torch.get_num_threads() == used == 2
    with cpu_threads(CPU, 0, net, (1, 8, 8)) as used:
        assert torch.get_num_threads() == used == 1  # 0: torch's own setting, untouched
    assert torch.get_num_threads() == 1


def test_negative_threads_is_a_usage_error() -> None:
    net = _net("smallcnn", 1, 8)
    with pytest.raises(UsageError, match="--threads"), cpu_threads(CPU, -1, net, (1, 8, 8)):
        pass


def test_devices() -> None:
    assert resolve_device("cpu") == CPU
    with pytest.raises(UsageError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == CPU
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_sgd_steps_like_torch_without_importing_dynamo() -> None:
    """backend.sgd updates exactly as torch.optim.SGD, and a fresh process stepping it never
    imports torch._dynamo (seconds of start-up)."""
    import copy
    import subprocess
    import sys

    from lossxfer.backend import sgd

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    twin = copy.deepcopy(model)
    batches = [torch.randn(8, 4) for _ in range(4)]
    options = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}
    for net, opt in ((model, sgd(model.parameters(), **options)),
                     (twin, torch.optim.SGD(twin.parameters(), **options))):  # fmt: skip
        for x in batches:
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
        opt.load_state_dict(opt.state_dict())
    for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    code = (
        "import sys, torch\nfrom lossxfer.backend import sgd\n"
        "p = torch.nn.Parameter(torch.ones(3))\nopt = sgd([p], lr=0.1, momentum=0.9)\n"
        "p.sum().backward()\nopt.step()\nopt.load_state_dict(opt.state_dict())\n"
        "print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
