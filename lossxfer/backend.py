"""Device and array-module choice: numpy on the CPU, torch on CPU or CUDA, CuPy on CUDA."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

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
