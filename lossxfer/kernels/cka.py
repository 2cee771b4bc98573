"""Fused CuPy kernels for CKA (docs/method.md §5); imported only by the `cupy` backend.

Each kernel replaces a chain of whole-matrix numpy-style passes by one pass over the matrix:
- `to_float64`: upload-side cast and shift, float32 rows → float64 (x − shift);
- `centre`: the whole (biased or unbiased) centring of a Gram matrix in one pass, given its row
  sums; the unbiased form also zeroes the diagonal (U-centring);
- `rbf_from_dot`: squared distances from a dot-product Gram, then the Gaussian kernel.
Gram matrices and the all-pairs HSIC reductions are cuBLAS products (`x @ x.T`, `S @ S.T`).
"""

from __future__ import annotations

from typing import Any

import cupy

_SHIFT = cupy.ElementwiseKernel(
    "T x, float64 s",
    "float64 z",
    "z = (double)x - s",
    "lossxfer_cka_shift",
)

_CENTRE = cupy.ElementwiseKernel(
    "raw float64 k, raw float64 r, float64 a, float64 c, int64 m, bool zero_diag",
    "float64 out",
    """
    const ptrdiff_t row = i / m;
    const ptrdiff_t col = i - row * m;
    out = (zero_diag && row == col) ? 0.0 : k[i] - a * (r[row] + r[col]) + c;
    """,
    "lossxfer_cka_centre",
)

_SQDIST = cupy.ElementwiseKernel(
    "raw float64 k, raw float64 q, int64 m",
    "float64 out",
    """
    const ptrdiff_t row = i / m;
    const ptrdiff_t col = i - row * m;
    out = q[row] + q[col] - 2.0 * k[i];
    """,
    "lossxfer_cka_sqdist",
)

_EXP_SCALE = cupy.ElementwiseKernel(
    "float64 d, float64 scale",
    "float64 out",
    "out = exp(-d * scale)",
    "lossxfer_cka_exp_scale",
)


def to_float64(x: Any, shift: Any | None) -> Any:
    """x (any float dtype, on the GPU) → float64 x − shift, in one pass."""
    if shift is None:
        return x.astype(cupy.float64)
    return _SHIFT(x, shift)


def centre(k: Any, unbiased: bool) -> None:
    """In-place centring of a C-contiguous m × m Gram (same formula as `centre_generic`)."""
    m = k.shape[0]
    r = k.sum(axis=1)
    if unbiased:
        r -= cupy.diagonal(k)  # row sums of K with a zero diagonal
        a, b = 1.0 / (m - 2), 1.0 / ((m - 1) * (m - 2))
    else:
        a, b = 1.0 / m, 1.0 / (m * m)
    total = float(r.sum())
    _CENTRE(k, r, a, total * b, m, unbiased, k)


def rbf_from_dot(k: Any, threshold: float) -> None:
    """In-place dot-product Gram → RBF Gram, σ² = threshold² × median squared distance."""
    m = k.shape[0]
    q = cupy.diagonal(k).copy()
    _SQDIST(k, q, m, k)
    median = float(cupy.median(k))
    scale = 1.0 / (2.0 * threshold**2 * median) if median > 0 else float("nan")
    _EXP_SCALE(k, scale, k)
