"""Device resolution and the CPU thread policy."""

from __future__ import annotations

import pytest
import torch

from lossxfer.backend import SMALL_SAMPLE, cpu_threads, resolve_device
from lossxfer.errors import DeviceError, UsageError

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_auto_uses_one_thread_for_small_images_and_restores() -> None:
    torch.set_num_threads(2)
    with cpu_threads(CPU, None, 8 * 8):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_auto_leaves_large_images_to_torch() -> None:
    torch.set_num_threads(2)
    with cpu_threads(CPU, None, SMALL_SAMPLE + 1):
        assert torch.get_num_threads() == 2


def test_explicit_count_and_zero() -> None:
    torch.set_num_threads(1)
    with cpu_threads(CPU, 2, 64):
        assert torch.get_num_threads() == 2
    with cpu_threads(CPU, 0, 64):
        assert torch.get_num_threads() == 1  # 0: torch's own setting, untouched
    assert torch.get_num_threads() == 1


def test_negative_threads_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--threads"), cpu_threads(CPU, -1, 64):
        pass


def test_devices() -> None:
    assert resolve_device("cpu") == CPU
    with pytest.raises(UsageError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == CPU
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:0")
