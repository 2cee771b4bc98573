"""The CKA estimators of docs/method.md §5: accumulators, their closed-form finish, a registry.

Streaming (`linear`, `debiased`): exact over all n rows from float64 sufficient statistics of
row-shifted activations X' = X − 1sᵀ (s a fixed per-layer shift near the mean, so a +100 offset
loses no digits). Per layer pair: G = X'ᵀY', column sums, and for debiased also Σ‖x'ᵢ‖²‖y'ᵢ‖²,
Σ‖x'ᵢ‖²y'ᵢ, Σ‖y'ᵢ‖²x'ᵢ, Σ‖x'ᵢ‖². Biased HSIC is shift-invariant after centring; HSIC₁ is
invariant to any constant row shift, so both are derived exactly from the shifted sums.
Sums add across blocks and shards, which is what makes `--shard`/`--merge` exact.

Minibatch (Nguyen et al. 2021): Σ_batches HSIC₁ over U-centred per-batch Grams, all layer
pairs from one product of the stacked Grams. RBF: full Gaussian Grams (Kornblith et al.'s demo).

Layers are "joint": A's layers, then B's (two stores) — one store is compared with itself.

Mixed precision (`precision="mixed"`, linear and debiased): the shifted rows are rounded once to
float32 and each block's products X'ᵀY' are float32 GEMMs, added to float64 sums; column sums
and the debiased row-norm terms stay float64 (docs/method.md §5 states the error bound).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossxfer.errors import UsageError
from lossxfer.similarity.backends import Array, Ops

Sums = dict[str, Any]  # name → float64 array; every entry adds across row blocks and shards
MIXED_ROWS = 4096  # rows per float32 product (its error grows with the rows it sums)


@dataclass(frozen=True)
class Layout:
    """Widths of A's layers and of B's (None: one store, A against itself)."""

    widths_a: tuple[int, ...]
    widths_b: tuple[int, ...] | None

    @property
    def one_store(self) -> bool:
        return self.widths_b is None

    @property
    def joint(self) -> int:
        return len(self.widths_a) + len(self.widths_b or ())

    def side(self, second: bool) -> tuple[int, ...]:
        return self.widths_b if second and self.widths_b is not None else self.widths_a


def offsets(widths: tuple[int, ...]) -> list[int]:
    return [0, *np.cumsum(widths).tolist()]


class Streaming:
    """Accumulates the sufficient statistics of linear or debiased CKA over row blocks."""

    def __init__(
        self,
        ops: Ops,
        layout: Layout,
        debiased: bool,
        shift_a: Any,
        shift_b: Any | None,
        precision: str = "exact",
    ) -> None:
        self.ops, self.layout, self.debiased = ops, layout, debiased
        self.dtype = "float32" if precision == "mixed" else "float64"
        if precision == "mixed":  # any shift is exact; a float32 one subtracts in float32
            shift_a, shift_b = (
                None if s is None else _float32_values(s) for s in (shift_a, shift_b)
            )
        self.shift_a = ops.load(shift_a)
        self.shift_b = None if shift_b is None else ops.load(shift_b)
        pa = sum(layout.widths_a)
        s: Sums = {"colsum_a": ops.zeros(pa)}
        if layout.widths_b is None:
            s["gram"] = ops.zeros(pa, pa)  # upper triangle (numpy) or full: read via triu
        else:
            pb = sum(layout.widths_b)
            s["gram"] = ops.zeros(pa, pb)
            s["colsum_b"] = ops.zeros(pb)
            for name, w in _self_grams(layout):
                s[name] = ops.zeros(w, w)
        if debiased:
            n_layers = layout.joint
            s["nn"] = ops.zeros(n_layers, n_layers)
            s["ksum"] = ops.zeros(n_layers)
            s["nz_a"] = ops.zeros(n_layers, pa)
            if layout.widths_b is not None:
                s["nz_b"] = ops.zeros(n_layers, sum(layout.widths_b))
            # column → layer indicator: (z ∘ z) @ indicator gives every layer's ‖x'ᵢ‖² at once
            self.indicator = [
                ops.load(_indicator(w)) for w in (layout.widths_a, layout.widths_b) if w
            ]
        self.sums = s

    def update(self, rows_a: list[Any], rows_b: list[Any] | None) -> None:
        """Add one aligned row block (rows per layer, A's then B's)."""
        n = rows_a[0].shape[0]
        if self.dtype == "float32" and n > MIXED_ROWS:  # bound the float32 sums' length
            step = -(-n // -(-n // MIXED_ROWS))  # equal parts of at most MIXED_ROWS rows
            for lo in range(0, n, step):
                part_b = None if rows_b is None else [x[lo : lo + step] for x in rows_b]
                self.update([x[lo : lo + step] for x in rows_a], part_b)
            return
        ops, s = self.ops, self.sums
        za = ops.load_layers(rows_a, self.shift_a, self.dtype)
        s["colsum_a"] += ops.colsum(za)
        if self.layout.widths_b is None or rows_b is None:
            zb = None
            s["gram"] = ops.syrk_acc(s["gram"], za)
        else:
            zb = ops.load_layers(rows_b, self.shift_b, self.dtype)
            s["colsum_b"] += ops.colsum(zb)
            s["gram"] = ops.gemm_acc(s["gram"], za, zb)
            for (name, _), x in zip(
                _self_grams(self.layout), _split_cols(za, zb, self.layout), strict=True
            ):
                s[name] = ops.syrk_acc(s[name], x)
        if self.debiased:
            sides = [ops.f64(za)] if zb is None else [ops.f64(za), ops.f64(zb)]
            k = ops.concat([(z * z) @ ind for z, ind in zip(sides, self.indicator, strict=True)])
            s["nn"] = ops.gemm_acc(s["nn"], k, k)
            s["ksum"] += k.sum(0)
            s["nz_a"] += k.T @ sides[0]
            if zb is not None:
                s["nz_b"] += k.T @ sides[1]

    def export(self) -> Sums:
        return {name: self.ops.numpy(v) for name, v in self.sums.items()}


def _float32_values(shift: Any) -> np.ndarray:
    """The shift rounded to the nearest float32 values, kept as float64."""
    return np.asarray(shift, dtype=np.float64).astype(np.float32).astype(np.float64)


def _indicator(widths: tuple[int, ...]) -> np.ndarray:
    """P × L matrix with a 1 where column p belongs to layer l."""
    out = np.zeros((sum(widths), len(widths)))
    for layer, (lo, hi) in enumerate(itertools.pairwise(offsets(widths))):
        out[lo:hi, layer] = 1.0
    return out


def _self_grams(layout: Layout) -> list[tuple[str, int]]:
    """Names and widths of the per-layer XᵀX accumulators kept when comparing two stores."""
    return [(f"self_a{i}", w) for i, w in enumerate(layout.widths_a)] + [
        (f"self_b{j}", w) for j, w in enumerate(layout.widths_b or ())
    ]


def _split_cols(za: Array, zb: Array | None, layout: Layout) -> list[Array]:
    """The joint layers' column blocks of the concatenated rows."""
    oa = offsets(layout.widths_a)
    out = [za[:, oa[i] : oa[i + 1]] for i in range(len(layout.widths_a))]
    if zb is not None and layout.widths_b is not None:
        ob = offsets(layout.widths_b)
        out += [zb[:, ob[j] : ob[j + 1]] for j in range(len(layout.widths_b))]
    return out


def upper_to_full(g: np.ndarray, step: int = 256) -> np.ndarray:
    """A symmetric matrix from its upper triangle (BLAS syrk fills only that).

    One copy, then each column block's lower part from the transposed upper part: 4× faster at
    2048 wide than `triu(g) + triu(g, 1).T`, which makes four full passes.
    """
    out = np.array(g)
    for lo in range(0, len(out), step):
        hi = min(lo + step, len(out))
        diagonal = out[lo:hi, lo:hi]
        diagonal[...] = np.triu(diagonal) + np.triu(diagonal, 1).T
        out[hi:, lo:hi] = out[lo:hi, hi:].T
    return out


def finish_streaming(
    sums: Sums, n: int, layout: Layout, debiased: bool, precision: str = "exact"
) -> np.ndarray:
    """CKA matrix (A's layers × B's) from the summed statistics, in float64.

    A self-HSIC within rounding of zero (`rounding_floor`) is zero: that layer's CKA is then
    undefined (NaN), not the ratio of two rounding errors (docs/method.md §5).
    """
    floor = rounding_floor(n, precision)
    one = layout.widths_b is None
    gram = sums["gram"]
    oa = offsets(layout.widths_a)
    ob = offsets(layout.side(second=True))
    la = len(layout.widths_a)
    colsum_a = sums["colsum_a"]
    colsum_b = colsum_a if one else sums["colsum_b"]
    nz_b = sums.get("nz_a") if one else sums.get("nz_b")

    def stats(second: bool, i: int) -> tuple[int, np.ndarray, Any, slice]:
        """(joint index, column sums, nz rows over this side's columns, column slice)."""
        o = ob if second else oa
        cols = slice(o[i], o[i + 1])
        joint = (i if one else la + i) if second else i
        colsum = colsum_b if second else colsum_a
        nz = nz_b if second else sums.get("nz_a")
        return joint, colsum[cols], (None if nz is None else nz[:, cols]), cols

    a_stats = [stats(False, i) for i in range(la)]
    b_stats = [stats(True, j) for j in range(len(ob) - 1)]
    if one:  # X'ᵀX' blocks on the diagonal of the (upper-triangular) joint Gram
        diag_a = [upper_to_full(gram[s[3], s[3]]) for s in a_stats]
    else:
        diag_a = [upper_to_full(sums[f"self_a{i}"]) for i in range(la)]
        diag_b = [upper_to_full(sums[f"self_b{j}"]) for j in range(len(b_stats))]

    def block(x: tuple[Any, ...], y: tuple[Any, ...]) -> np.ndarray:
        """X'ᵀY' for a pair; with one store only the upper triangle of the Gram is valid."""
        (u, _, _, rows), (v, _, _, cols) = x, y
        if not one or u < v:
            return gram[rows, cols]
        return gram[cols, rows].T if u > v else diag_a[u]

    def hsic(g: np.ndarray, x: tuple[Any, ...], y: tuple[Any, ...]) -> float:
        (u, sx, nzx, _), (v, sy, nzy, _) = x, y
        if not debiased:
            c = g - np.outer(sx, sy) / n  # X̃ᵀỸ: exact column centring of the shifted sums
            return float(np.einsum("ij,ij->", c, c))
        nn, ksum = sums["nn"], sums["ksum"]
        tr_kl = float(np.einsum("ij,ij->", g, g)) - nn[u, v]  # tr(K̃L̃)
        k1 = sx @ sx - ksum[u]  # 1ᵀK̃1
        l1 = sy @ sy - ksum[v]  # 1ᵀL̃1
        # 1ᵀK̃L̃1 = Σⱼ (xⱼ·Sx − kⱼ)(yⱼ·Sy − lⱼ)
        kl1 = sx @ g @ sy - nzy[u] @ sy - nzx[v] @ sx + nn[u, v]
        return float((tr_kl + k1 * l1 / ((n - 1) * (n - 2)) - 2 * kl1 / (n - 2)) / (n * (n - 3)))

    def size(g: np.ndarray, x: tuple[Any, ...]) -> float:
        """`hsic(g, x, x)` with every term and product of its sums taken by absolute value:
        what its rounding error is relative to."""
        u, sx, nzx, _ = x
        a, ax = np.abs(g), np.abs(sx)
        if not debiased:
            c = a + np.outer(ax, ax) / n
            return float(np.einsum("ij,ij->", c, c))
        nn, ksum = abs(sums["nn"][u, u]), abs(sums["ksum"][u])
        k1 = sx @ sx + ksum
        kl1 = ax @ a @ ax + 2 * np.abs(nzx[u]) @ ax + nn
        total = float(np.einsum("ij,ij->", g, g)) + nn + k1 * k1 / ((n - 1) * (n - 2))
        return float((total + 2 * kl1 / (n - 2)) / (n * (n - 3)))

    def own(g: np.ndarray, x: tuple[Any, ...]) -> float:
        """A self-HSIC; 0 when it is within rounding of 0 (docs/method.md §5)."""
        value = hsic(g, x, x)
        return 0.0 if abs(value) <= floor * size(g, x) else value

    self_a = [own(g, s) for g, s in zip(diag_a, a_stats, strict=True)]
    self_b = self_a if one else [own(g, s) for g, s in zip(diag_b, b_stats, strict=True)]
    out = np.empty((la, len(b_stats)))
    for i, x in enumerate(a_stats):
        for j, y in enumerate(b_stats):
            out[i, j] = _ratio(hsic(block(x, y), x, y), self_a[i], self_b[j])
    return out


def rounding_floor(n: int, precision: str) -> float:
    """The relative size below which a self-HSIC is rounding error, not signal.

    A self-HSIC is a sum of terms of size `scale` that cancel; summing n rows of them leaves an
    error of a few ε·√n·scale in practice (float64 sums; float32 products of at most MIXED_ROWS
    rows in mixed precision). 16ε·max(√n, 8) stays far above that and far below any self-HSIC
    that still carries a digit.
    """
    eps = float(np.finfo(np.float32 if precision == "mixed" else np.float64).eps)
    rows = min(n, MIXED_ROWS) if precision == "mixed" else n
    return 16 * eps * max(float(np.sqrt(rows)), 8.0)


def _ratio(xy: float, xx: float, yy: float) -> float:
    """HSIC(X,Y) / √(HSIC(X,X) HSIC(Y,Y)); undefined (NaN) when a self-HSIC is not positive."""
    denom = xx * yy
    return xy / float(np.sqrt(denom)) if denom > 0 and xx > 0 else float("nan")


def cka_from_hsic(
    m: np.ndarray, layout: Layout, scale: np.ndarray | None = None, floor: float = 0.0
) -> np.ndarray:
    """CKA matrix from the joint layers' HSIC matrix (minibatch and RBF); a self-HSIC at most
    `floor` × its `scale` (the size of what it was computed from) is taken as 0."""
    la = len(layout.widths_a)
    cols = range(la) if layout.one_store else range(la, layout.joint)
    own = np.diag(m).copy()
    if scale is not None:
        own[np.abs(own) <= floor * scale] = 0.0
    return np.array([[_ratio(m[i, j], own[i], own[j]) for j in cols] for i in range(la)])


class Minibatch:
    """Σ over minibatches of HSIC₁ for all joint layer pairs (Nguyen, Raghu & Kornblith 2021)."""

    def __init__(self, ops: Ops, n_layers: int) -> None:
        self.ops = ops
        self.n_layers = n_layers
        # scale: Σ ‖K‖²_F / (m(m−3)) per layer, the size a self-HSIC₁ is rounded against
        self.sums: Sums = {"hsic": ops.zeros(n_layers, n_layers), "scale": ops.zeros(n_layers)}

    def update(self, rows_a: list[Any], rows_b: list[Any] | None) -> None:
        """One minibatch: rows of every joint layer. Each layer's Gram is formed once."""
        ops = self.ops
        rows = rows_a + (rows_b or [])
        m = rows[0].shape[0]
        if m < 4:
            raise UsageError(f"a minibatch of {m} rows: unbiased HSIC needs at least 4")
        stack = ops.empty(self.n_layers, m, m)
        for u, x in enumerate(rows):
            x = ops.load(x)
            x -= x.mean(0)  # per-batch feature centring: HSIC₁ is unchanged, digits are kept
            ops.gram_into(stack[u], x)
            self.sums["scale"][u] += (stack[u] * stack[u]).sum() * (1.0 / (m * (m - 3)))
            ops.centre(stack[u], unbiased=True)
        flat = stack.reshape(self.n_layers, m * m)
        self.sums["hsic"] += (flat @ flat.T) * (1.0 / (m * (m - 3)))

    def export(self) -> Sums:
        return {name: self.ops.numpy(v) for name, v in self.sums.items()}


def rbf_hsic(ops: Ops, layers: list[Any], threshold: float) -> np.ndarray:
    """Joint layers' biased HSIC matrix with RBF kernels on all n rows (n × n Grams)."""
    n = layers[0].shape[0]
    stack = ops.empty(len(layers), n, n)
    for u, x in enumerate(layers):
        x = ops.load(x)
        x -= x.mean(0)  # distances are unchanged; the dot products keep their digits
        ops.gram_into(stack[u], x)
        ops.rbf_from_dot(stack[u], threshold)
        ops.centre(stack[u], unbiased=False)
    flat = stack.reshape(len(layers), n * n)
    return np.asarray(ops.numpy(flat @ flat.T))


class Gather:
    """RBF's "accumulator": the row blocks themselves (it needs every row at once)."""

    def __init__(self, ops: Ops) -> None:
        self.ops = ops
        self.sums: Sums = {"blocks": []}

    def update(self, rows_a: list[Any], rows_b: list[Any] | None) -> None:
        self.sums["blocks"].append([self.ops.load(x) for x in rows_a + (rows_b or [])])

    def export(self) -> Sums:
        return self.sums
