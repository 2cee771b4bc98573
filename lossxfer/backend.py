"""Device and array-module choice: numpy on the CPU, torch on CPU or CUDA, CuPy on CUDA."""

from __future__ import annotations

import contextlib
import functools
import math
import re
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lossxfer.errors import DeviceError, UsageError

if TYPE_CHECKING:
    import torch

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → the first CUDA device if there is one, else the CPU; unavailable → exit 4."""
    import torch

    if not _DEVICE.match(name):
        raise UsageError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
        return dev
    return torch.device("cpu")


def cupy_available() -> bool:
    """True when CuPy imports and sees a GPU (never raises)."""
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:
        return False


# Forward FLOPs per image from which torch's intra-op threads pay on the CPU. Below it one
# thread is faster: smallcnn on 8 px digits (7 MFLOP) and resnet18 on 8 px (69 MFLOP) ran 2–8×
# faster on one thread than on two on the shared 2-core machine, while resnet18 at 32 px
# (1.1 GFLOP) gains from every core (0.56× → 0.90× of a two-thread forward pass in issue #23).
PARALLEL_FLOPS = 300e6


def forward_flops(model: torch.nn.Module, input_shape: tuple[int, ...]) -> float:
    """Multiply-add FLOPs (2 per MAC) of convolutions and linear layers for one image.

    Counted with forward hooks during one eval-mode pass of a blank image on the model's
    device (milliseconds, no weights changed); attention products and elementwise work are not
    counted: convolutions and projections dominate every supported architecture.
    """
    import torch
    from torch import nn

    total = 0

    def count(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.modules.conv._ConvNd):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    handles = [m.register_forward_hook(count) for m in layers]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return 2.0 * total


@contextlib.contextmanager
def cpu_threads(
    device: torch.device,
    threads: int | None,
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
) -> Iterator[int]:
    """Set torch's intra-op CPU threads for running `model`, yield the count, then restore it.

    `threads`: N → N threads; 0 → torch's default (one per core, or OMP_NUM_THREADS); None →
    auto, from the model's cost per image (`forward_flops` of `input_shape` = C × H × W): one
    thread below PARALLEL_FLOPS, torch's default above. Intra-op parallelism does not pay for
    cheap convolutions, and its spinning threads collapse when cores are shared: smallcnn on
    digits trained in 3 s on one thread and 89 s on two on a loaded 2-core machine. Auto on a
    GPU leaves torch's default. The count yielded goes into the records.
    """
    import torch

    before = torch.get_num_threads()
    if threads is not None and threads < 0:
        raise UsageError(f"--threads {threads}: expected 0 (torch's default) or a positive count")
    wanted = threads
    if wanted is None:
        cheap = device.type == "cpu" and forward_flops(model, input_shape) < PARALLEL_FLOPS
        wanted = 1 if cheap else 0
    if wanted:
        torch.set_num_threads(wanted)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def sgd(params: Any, **options: Any) -> torch.optim.SGD:
    """torch's SGD, stepping without importing torch._dynamo (seconds of start-up).

    torch marks optimizer methods "do not compile" through wrappers that import torch._dynamo
    on their first call, and `step` calls `torch._dynamo.graph_break()`, a no-op outside
    compilation: on a small CPU that import costs more than a whole digits epoch. Here `step`
    is torch's own step under no_grad (what its wrapper does when not compiling), and the
    other wrappers' cache of what to call is pre-filled with the function itself. lossxfer
    compiles networks, never the optimizer, so nothing is lost (tests/test_train.py checks
    that a run does not load torch._dynamo and that updates equal torch.optim.SGD's).
    """
    import torch

    _skip_dynamo_wrappers(torch)
    sgd_class: type[torch.optim.SGD] = _sgd_class()
    return sgd_class(params, **options)


def _skip_dynamo_wrappers(torch: Any) -> None:
    wrapper = torch._disable_dynamo(lambda: None).__code__
    for name, module in list(sys.modules.items()):
        if not name.startswith("torch.optim") or module is None:
            continue
        for obj in list(vars(module).values()):
            for fn in vars(obj).values() if isinstance(obj, type) else (obj,):
                inner = getattr(fn, "__wrapped__", None)
                if getattr(fn, "__code__", None) is wrapper and inner is not None:
                    setattr(inner, "__dynamo_disable", inner)


@functools.cache
def _sgd_class() -> type:
    import torch

    class SGD(torch.optim.SGD):
        @torch.no_grad()
        def step(self, closure: Any = None) -> Any:
            return torch.optim.SGD.step.__wrapped__(self, closure)  # type: ignore[attr-defined]

    return SGD
