"""Device and array-module choice: numpy on the CPU, torch on CPU or CUDA, CuPy on CUDA."""

from __future__ import annotations

import re
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
