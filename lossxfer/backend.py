"""Device and array-module choice: numpy on the CPU, torch on CPU or CUDA, CuPy on CUDA."""

from __future__ import annotations

import contextlib
import functools
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


SMALL_SAMPLE = 64 * 64 * 3  # values per input image at or below which one CPU thread is faster


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int | None, sample_numel: int) -> Iterator[None]:
    """Set torch's intra-op CPU threads for a block of work, and restore them afterwards.

    `threads`: N → N threads; 0 → torch's default (one per core, or OMP_NUM_THREADS); None →
    auto: one thread for small inputs (≤ 64×64×3 values per image), else torch's default.
    Intra-op parallelism does not pay for tiny convolutions, and its spinning threads collapse
    when cores are shared: smallcnn on digits trained in 3 s on one thread and 89 s on two on a
    loaded 2-core machine. GPU work is unaffected.
    """
    import torch

    before = torch.get_num_threads()
    wanted = threads
    if wanted is None:
        wanted = 1 if device.type == "cpu" and sample_numel <= SMALL_SAMPLE else 0
    if wanted < 0:
        raise UsageError(f"--threads {wanted}: expected 0 (torch's default) or a positive count")
    if wanted:
        torch.set_num_threads(wanted)
    try:
        yield
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
