"""Array backends for CKA: numpy (the reference), torch (CPU or CUDA) and CuPy (CUDA).

The estimators are written once against the operators the three array types share (`@`, `+=`,
slicing, `.sum(0)`); a backend supplies only what differs: moving float32 rows to the device in
float64, accumulating Gram products in place, centring a Gram matrix and the median.
Every backend computes in float64 so that all of them agree to rounding (docs/method.md §5).
"""

from __future__ import annotations

import os
import re
from typing import Any

from lossxfer.errors import DeviceError, UsageError
from lossxfer.registry import check_choice

Array = Any  # numpy.ndarray, torch.Tensor or cupy.ndarray, depending on the backend

BACKENDS = ("auto", "numpy", "torch", "cupy")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class NumpyOps:
    """The reference: numpy, with BLAS syrk/gemm accumulating in place (no P×P temporaries).

    A block's layers sit side by side in one C-order array, which BLAS reads as its transpose
    without a copy; float32 blocks (`precision="mixed"`) are multiplied by sgemm/ssyrk into a
    reused float32 buffer that is then added to the float64 sums.
    """

    name = "numpy"
    device = "cpu"

    def __init__(self) -> None:
        import numpy as np
        from scipy.linalg import blas

        self.np = np
        self._blas = blas
        self._buffers: dict[tuple[int, int], Array] = {}

    def load(self, rows: Any, shift: Array | None = None) -> Array:
        """Rows → float64 on the device, minus `shift` (exact in float64)."""
        np = self.np
        if shift is None:
            return np.array(rows, dtype=np.float64)  # always a copy: callers centre it in place
        return np.subtract(rows, shift, dtype=np.float64)

    def load_layers(self, parts: list[Any], shift: Array, dtype: str = "float64") -> Array:
        """One block's layers side by side minus `shift`, written straight into one array.

        The difference is rounded once to `dtype` (for float32, `shift` holds float32 values,
        so subtracting in float32 rounds exactly as float64 then rounding would).
        """
        np = self.np
        z = np.empty((parts[0].shape[0], shift.shape[0]), dtype=dtype)
        shift = shift.astype(dtype, copy=False)
        lo = 0
        for x in parts:
            np.subtract(x, shift[lo : lo + x.shape[1]], out=z[:, lo : lo + x.shape[1]])
            lo += x.shape[1]
        return z

    def f64(self, z: Array) -> Array:
        return z.astype(self.np.float64, copy=False)

    def colsum(self, z: Array) -> Array:
        """Column sums in float64 (without a float64 copy of float32 rows)."""
        return z.sum(0, dtype=self.np.float64)

    def _buffer(self, rows: int, cols: int) -> Array:
        """A reused float32 product buffer (one per shape)."""
        key = (rows, cols)
        if key not in self._buffers:
            self._buffers[key] = self.np.zeros(key, dtype=self.np.float32, order="F")
        return self._buffers[key]

    def syrk_acc(self, acc: Array, z: Array) -> Array:
        """acc += zᵀz; only the upper triangle is read (`upper_to_full`).

        A layer's columns of a block are a strided view: numpy's matmul hands it to BLAS syrk
        with its row stride, where scipy's wrapper would copy it first (a fresh n × w array whose
        page faults cost 0.15 s of a 0.73 s CKA at n = 10,000 on narrow layers).
        """
        if z.flags.c_contiguous:
            blas = self._blas
            if z.dtype == self.np.float64:
                return blas.dsyrk(1.0, z.T, beta=1.0, c=acc, trans=0, lower=0, overwrite_c=1)
            buf = self._buffer(*acc.shape)
            acc += blas.ssyrk(1.0, z.T, beta=0.0, c=buf, trans=0, lower=0, overwrite_c=1)
            return acc
        acc += z.T @ z
        return acc

    def gemm_acc(self, acc: Array, x: Array, y: Array) -> Array:
        """acc += xᵀy."""
        x, y = self.np.ascontiguousarray(x), self.np.ascontiguousarray(y)
        if x.dtype == self.np.float64 and y.dtype == self.np.float64:
            return self._blas.dgemm(1.0, x.T, y.T, beta=1.0, c=acc, trans_b=1, overwrite_c=1)
        buf = self._buffer(*acc.shape)
        acc += self._blas.sgemm(1.0, x.T, y.T, beta=0.0, c=buf, trans_b=1, overwrite_c=1)
        return acc

    def zeros(self, *shape: int) -> Array:
        # Fortran order lets BLAS update the accumulator in place.
        return self.np.zeros(shape, dtype=self.np.float64, order="F")

    def empty(self, *shape: int) -> Array:
        return self.np.empty(shape, dtype=self.np.float64)

    def concat(self, parts: list[Array]) -> Array:
        return parts[0] if len(parts) == 1 else self.np.concatenate(parts, axis=1)

    def rows_concat(self, parts: list[Array]) -> Array:
        return parts[0] if len(parts) == 1 else self.np.concatenate(parts, axis=0)

    def gram_into(self, out: Array, x: Array) -> None:
        self.np.dot(x, x.T, out=out)  # BLAS syrk; numpy's matmul with out= is several × slower

    def fill_diagonal(self, k: Array, value: float) -> None:
        self.np.fill_diagonal(k, value)

    def centre(self, k: Array, unbiased: bool) -> None:
        centre_generic(self, k, unbiased)

    def rbf_from_dot(self, k: Array, threshold: float) -> None:
        rbf_generic(self, k, threshold)

    def exp(self, k: Array) -> None:
        self.np.exp(k, out=k)

    def median(self, k: Array) -> float:
        return float(self.np.median(k))

    def diagonal(self, k: Array) -> Array:
        return self.np.diagonal(k).copy()

    def numpy(self, a: Array) -> Any:
        return self.np.asarray(a, dtype=self.np.float64)

    def sync(self) -> None:
        """Wait for queued device work (for timing); nothing to wait for on the CPU."""


class TorchOps:
    """torch on the CPU or a CUDA device (float64 throughout)."""

    name = "torch"

    def __init__(self, device: str) -> None:
        import torch

        from lossxfer.backend import resolve_device

        self.torch = torch
        self.dev = resolve_device(device)
        self.device = str(self.dev)

    def load(self, rows: Any, shift: Array | None = None) -> Array:
        torch = self.torch
        t = rows if isinstance(rows, torch.Tensor) else torch.from_numpy(rows)
        t = t.to(self.dev, torch.float64, copy=True)
        return t if shift is None else t - shift

    def load_layers(self, parts: list[Any], shift: Array, dtype: str = "float64") -> Array:
        torch = self.torch
        if isinstance(parts[0], torch.Tensor):
            joined = parts[0] if len(parts) == 1 else torch.cat([p.to(self.dev) for p in parts], 1)
        else:
            joined = host_concat(parts)
        return self.load(joined, shift).to(getattr(torch, dtype))

    def f64(self, z: Array) -> Array:
        return z.to(self.torch.float64)

    def colsum(self, z: Array) -> Array:
        return z.sum(0, dtype=self.torch.float64)

    def zeros(self, *shape: int) -> Array:
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.dev)

    def empty(self, *shape: int) -> Array:
        return self.torch.empty(shape, dtype=self.torch.float64, device=self.dev)

    def concat(self, parts: list[Array]) -> Array:
        return parts[0] if len(parts) == 1 else self.torch.cat(parts, dim=1)

    def rows_concat(self, parts: list[Array]) -> Array:
        return parts[0] if len(parts) == 1 else self.torch.cat(parts, dim=0)

    def syrk_acc(self, acc: Array, z: Array) -> Array:
        return self.gemm_acc(acc, z, z)

    def gemm_acc(self, acc: Array, x: Array, y: Array) -> Array:
        """acc += xᵀy; float32 operands (mixed precision) multiply in float32, add in float64."""
        if x.dtype == acc.dtype:
            return acc.addmm_(x.T, y)
        return acc.add_(x.T @ y)

    def gram_into(self, out: Array, x: Array) -> None:
        self.torch.mm(x, x.T, out=out)

    def fill_diagonal(self, k: Array, value: float) -> None:
        k.fill_diagonal_(value)

    def centre(self, k: Array, unbiased: bool) -> None:
        centre_generic(self, k, unbiased)

    def rbf_from_dot(self, k: Array, threshold: float) -> None:
        rbf_generic(self, k, threshold)

    def exp(self, k: Array) -> None:
        k.exp_()

    def median(self, k: Array) -> float:
        """numpy's median (mean of the two middle values); torch.median returns the lower one."""
        flat = k.reshape(-1)
        size = flat.numel()
        hi = flat.kthvalue(size // 2 + 1).values
        if size % 2:
            return float(hi)
        return float((flat.kthvalue(size // 2).values + hi) / 2)

    def diagonal(self, k: Array) -> Array:
        return k.diagonal().clone()

    def numpy(self, a: Array) -> Any:
        return a.detach().to("cpu", self.torch.float64).numpy()

    def sync(self) -> None:
        if self.dev.type == "cuda":
            self.torch.cuda.synchronize(self.dev)


class CupyOps(NumpyOps):
    """CuPy on a CUDA device: cuBLAS products and the fused kernels of `lossxfer.kernels.cka`."""

    name = "cupy"

    def __init__(self, index: int) -> None:
        import cupy

        from lossxfer.kernels import cka as kernels

        self.np = cupy
        self.cupy = cupy
        self.kernels = kernels
        self.index = index
        self.device = f"cuda:{index}"
        count = cupy.cuda.runtime.getDeviceCount()
        if index >= count:
            raise DeviceError(f"--device cuda:{index}: only {count} CUDA device(s) present")
        cupy.cuda.Device(index).use()

    def load(self, rows: Any, shift: Array | None = None) -> Array:
        dev = self.cupy.asarray(rows)  # upload float32: half the bytes of float64
        return self.kernels.to_float64(dev, shift)

    def load_layers(self, parts: list[Any], shift: Array, dtype: str = "float64") -> Array:
        z = self.load(host_concat(parts), shift)
        return z if dtype == "float64" else z.astype(dtype)

    def zeros(self, *shape: int) -> Array:
        return self.cupy.zeros(shape, dtype=self.cupy.float64)

    def syrk_acc(self, acc: Array, z: Array) -> Array:
        acc += z.T @ z
        return acc

    def gemm_acc(self, acc: Array, x: Array, y: Array) -> Array:
        acc += x.T @ y  # float32 operands: a float32 product, added in float64
        return acc

    def centre(self, k: Array, unbiased: bool) -> None:
        self.kernels.centre(k, unbiased)

    def rbf_from_dot(self, k: Array, threshold: float) -> None:
        self.kernels.rbf_from_dot(k, threshold)

    def numpy(self, a: Array) -> Any:
        return self.cupy.asnumpy(a).astype("float64", copy=False)

    def sync(self) -> None:
        self.cupy.cuda.Device(self.index).synchronize()


Ops = NumpyOps | TorchOps | CupyOps


def host_concat(parts: list[Any]) -> Any:
    """One block's layers side by side on the host, so that a block is one device transfer."""
    import numpy as np

    if len(parts) == 1:
        return parts[0]
    if type(parts[0]).__module__.startswith("cupy"):
        import cupy

        return cupy.concatenate(parts, axis=1)
    return np.concatenate(parts, axis=1)


def centre_generic(ops: Ops, k: Array, unbiased: bool) -> None:
    """Centre a Gram matrix in place (docs/method.md §5).

    Biased: HKH. Unbiased (U-centring, Song et al. 2012 / Székely & Rizzo): zero the diagonal,
    subtract row and column sums / (m−2), add the total / ((m−1)(m−2)), zero the diagonal again;
    then ⟨U(K), U(L)⟩ / (m(m−3)) is HSIC₁.
    """
    m = k.shape[0]
    if unbiased:
        ops.fill_diagonal(k, 0.0)
        a, b = 1.0 / (m - 2), 1.0 / ((m - 1) * (m - 2))
    else:
        a, b = 1.0 / m, 1.0 / (m * m)
    r = k.sum(1)
    total = float(r.sum())
    k -= r[:, None] * a
    k -= r[None, :] * a
    k += total * b
    if unbiased:
        ops.fill_diagonal(k, 0.0)


def rbf_generic(ops: Ops, k: Array, threshold: float) -> None:
    """Dot-product Gram → RBF Gram in place, as Kornblith et al.'s demo (`gram_rbf`) does it.

    σ² = threshold² × median of all squared distances (the zero diagonal included).
    """
    q = ops.diagonal(k)
    k *= -2.0
    k += q[:, None]
    k += q[None, :]
    median = ops.median(k)
    k *= -1.0 / (2.0 * threshold**2 * median) if median > 0 else float("nan")
    ops.exp(k)


def get_backend(name: str = "auto", device: str = "auto") -> Ops:
    """The backend for `--backend NAME --device DEV`; unavailable → DeviceError (exit 4).

    auto: CuPy on CUDA when present, else torch on CUDA, else numpy (the fastest CPU path).
    """
    check_choice("backend", name, BACKENDS)
    if not _DEVICE.match(device):
        raise UsageError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    from lossxfer.backend import cupy_available

    if name == "numpy" or (name == "auto" and device == "cpu"):
        if device.startswith("cuda"):
            raise UsageError("--backend numpy runs on the CPU; use torch or cupy for --device cuda")
        return NumpyOps()
    if name == "torch":
        return TorchOps(device)
    if name == "cupy":
        if device == "cpu":
            raise UsageError("--backend cupy needs --device cuda; use numpy or torch on the CPU")
        if not cupy_available():
            raise DeviceError("--backend cupy: CuPy with a CUDA GPU is not available here")
        return CupyOps(_cuda_index(device))
    if cupy_available():
        return CupyOps(_cuda_index(device))
    if device.startswith("cuda") or (_gpu_driver() and _torch_cuda()):
        return TorchOps(device)  # raises DeviceError for --device cuda without CUDA
    return NumpyOps()


def backend_of(array: Any) -> Ops:
    """The backend that computes on `array` where it lives: numpy, torch (its device) or CuPy."""
    package = type(array).__module__.partition(".")[0]
    if package == "torch":
        return TorchOps(str(array.device))
    if package == "cupy":
        return CupyOps(int(array.device.id))
    return NumpyOps()


def _gpu_driver() -> bool:
    """A GPU driver is present (checked before paying for `import torch` on CPU machines)."""
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg"))


def _torch_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _cuda_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index else 0
