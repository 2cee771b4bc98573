"""CKA speed and agreement: ours against (a) a Gram-based float64 reference written like Kornblith
et al.'s published demo and (b) a per-pair minibatch loop in the style of the common PyTorch CKA
packages, in one process on the same store (n rows, 6 layers of widths 64–2048 by default).

Prints time ratios, the max |difference| of the matrices, and the streaming estimators' GFLOP/s
against this machine's measured float64 matmul rate. `--rss` also runs ours on 10k and 100k rows
in fresh processes and prints their peak RSS (it should not grow with n).

Usage: .venv/bin/python benchmarks/bench_cka.py [--n 10000] [--device cpu|cuda] [--rss]
       [--ref cached|per-pair|none] [--widths 64,128,256,512,1024,2048] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lossxfer.similarity import CkaConfig, run_cka
from lossxfer.similarity.run import batch_plan
from lossxfer.store import LayerSpec, StoreWriter


def write_store(path: Path, n: int, widths: list[int], seed: int = 0) -> None:
    """Network-like float32 activations (post-ReLU, shared latent), written in row blocks."""
    rng = np.random.default_rng(seed)
    latent = 32
    proj = [rng.normal(size=(latent, w)) / np.sqrt(latent) for w in widths]
    names = [f"block{i + 1}" for i in range(len(widths))]
    specs = {k: LayerSpec(w, (w,), "avg") for k, w in zip(names, widths, strict=True)}
    attrs = {"model": {"arch": "bench", "objective": "softmax"}, "dataset": {"label": "bench"}}
    with StoreWriter(path, attrs) as w:
        w.create_split("test", n, specs)
        for lo in range(0, n, 4096):
            rows = min(4096, n - lo)
            z = rng.normal(size=(rows, latent))
            layers = {}
            for k, p, width in zip(names, proj, widths, strict=True):
                noise = rng.normal(size=(rows, width), scale=0.5)
                layers[k] = np.maximum(z @ p + noise, 0).astype(np.float32)
            w.write("test", lo, np.zeros(rows, np.int64), np.arange(lo, lo + rows), layers)


def best_time(fn: Any, repeat: int = 1) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def matmul_rate(device: str) -> float:
    """Measured float64 GEMM rate (GFLOP/s) on the device: best of 3, 4096³."""
    size = 4096
    if device.startswith("cuda"):
        import torch

        a = torch.rand(size, size, dtype=torch.float64, device=device)
        a @ a
        torch.cuda.synchronize()

        def run() -> None:
            a @ a
            torch.cuda.synchronize()

    else:
        a = np.random.default_rng(0).random((size, size))

        def run() -> None:
            a @ a

    seconds, _ = best_time(run, 3)
    return 2 * size**3 / seconds / 1e9


# -- (a) Gram-based float64 reference, written like Kornblith et al.'s demo --------------------


def gram_linear(xp: Any, x: Any) -> Any:
    return x.dot(x.T)


def center_gram(xp: Any, gram: Any, unbiased: bool) -> Any:
    gram = gram.copy()
    if unbiased:
        n = gram.shape[0]
        xp.fill_diagonal(gram, 0)
        means = xp.sum(gram, 0, dtype=xp.float64) / (n - 2)
        means -= xp.sum(means) / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        xp.fill_diagonal(gram, 0)
    else:
        means = xp.mean(gram, 0, dtype=xp.float64)
        means -= xp.mean(means) / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def cka_demo(xp: Any, gram_x: Any, gram_y: Any, debiased: bool) -> float:
    gram_x = center_gram(xp, gram_x, debiased)
    gram_y = center_gram(xp, gram_y, debiased)
    scaled_hsic = gram_x.ravel().dot(gram_y.ravel())
    return float(scaled_hsic / (xp.linalg.norm(gram_x) * xp.linalg.norm(gram_y)))


def gram_reference(xp: Any, data: list[Any], debiased: bool, mode: str) -> np.ndarray:
    """`per-pair`: cka(gram_linear(x), gram_linear(y)) per pair, as the demo is used;
    `cached`: each layer's centred Gram once, then one dot per pair (the stronger baseline)."""
    n_layers = len(data)
    out = np.empty((n_layers, n_layers))
    if mode == "per-pair":
        for i in range(n_layers):
            for j in range(i, n_layers):
                out[i, j] = out[j, i] = cka_demo(
                    xp, gram_linear(xp, data[i]), gram_linear(xp, data[j]), debiased
                )
        return out
    grams = [center_gram(xp, gram_linear(xp, x), debiased) for x in data]
    norms = [float(xp.linalg.norm(g)) for g in grams]
    for i in range(n_layers):
        for j in range(i, n_layers):
            hsic = float(grams[i].ravel().dot(grams[j].ravel()))
            out[i, j] = out[j, i] = hsic / (norms[i] * norms[j])
    return out


# -- (b) per-pair minibatch loop, PyTorch-package style ----------------------------------------


def _hsic1(torch: Any, k: Any, g: Any) -> Any:
    n = k.shape[0]
    k, g = k.clone(), g.clone()
    k.fill_diagonal_(0)
    g.fill_diagonal_(0)
    ones = torch.ones(n, 1, dtype=k.dtype, device=k.device)
    result = torch.trace(k @ g)
    result = result + (ones.t() @ k @ ones @ ones.t() @ g @ ones) / ((n - 1) * (n - 2))
    result = result - (ones.t() @ k @ g @ ones) * 2 / (n - 2)
    return (result / (n * (n - 3))).squeeze()


def minibatch_reference(data: list[np.ndarray], batches: list[np.ndarray], device: str) -> Any:
    """For every batch and every layer pair: both Grams and three HSIC₁ terms, accumulated."""
    import torch

    n_layers = len(data)
    acc = torch.zeros(n_layers, n_layers, 3, dtype=torch.float64, device=device)
    for rows in batches:
        feats = [torch.from_numpy(x[rows]).to(device, torch.float64) for x in data]
        for i, x in enumerate(feats):
            for j, y in enumerate(feats):
                k, g = x @ x.T, y @ y.T
                acc[i, j, 0] += _hsic1(torch, k, k)
                acc[i, j, 1] += _hsic1(torch, k, g)
                acc[i, j, 2] += _hsic1(torch, g, g)
    return (acc[:, :, 1] / (acc[:, :, 0].sqrt() * acc[:, :, 2].sqrt())).cpu().numpy()


# -- driver ------------------------------------------------------------------------------------


def ours(store: Path, estimator: str, args: argparse.Namespace) -> tuple[float, np.ndarray]:
    config = CkaConfig(
        str(store), estimator=estimator, batch_size=args.batch_size, device=args.device
    )
    seconds, result = best_time(lambda: run_cka(config))
    return seconds, result.matrix


def compare(args: argparse.Namespace, store: Path, widths: list[int]) -> None:
    n, total_width = args.n, sum(widths)
    peak = matmul_rate(args.device)
    print(f"n={n}, widths={widths}, device={args.device}; float64 matmul peak {peak:.1f} GFLOP/s")
    from lossxfer.store import open_store

    with open_store(store) as s:
        data = [s.read("test", name, dtype="float64") for name in s.layers("test")]
    xp: Any = np
    if args.device.startswith("cuda"):
        try:
            import cupy

            xp, data_ref = cupy, [cupy.asarray(x) for x in data]
        except ImportError:
            data_ref = data  # the Gram reference stays on the CPU (numpy) without CuPy
    else:
        data_ref = data
    for estimator, debiased in (("linear", False), ("debiased", True)):
        t_ours, m_ours = ours(store, estimator, args)
        flops = n * total_width * (total_width + 1)  # the X'ᵀX' products: what must be done
        rate = flops / t_ours / 1e9
        line = (
            f"{estimator:9s} ours {t_ours:7.2f} s  {rate:6.1f} GFLOP/s = {rate / peak:4.0%} of peak"
        )
        if args.ref != "none":
            t_ref, m_ref = best_time(
                lambda d=debiased: gram_reference(xp, data_ref, d, args.ref)  # type: ignore[misc]
            )
            diff = np.abs(m_ref - m_ours).max()
            line += f" | Gram ref ({args.ref}) {t_ref:7.2f} s ×{t_ref / t_ours:5.1f}"
            line += f"  max|Δ| {diff:.1e}"
        print(line, flush=True)
    t_ours, m_ours = ours(store, "minibatch", args)
    plan = batch_plan(n, args.batch_size, 1, 0)
    t_ref, m_ref = best_time(lambda: minibatch_reference(data, plan, args.device))
    diff = np.abs(m_ref - m_ours).max()
    print(
        f"minibatch ours {t_ours:7.2f} s | per-pair loop {t_ref:7.2f} s  ×{t_ref / t_ours:5.1f}"
        f"  max|Δ| {diff:.1e}  (m={args.batch_size}, {len(plan)} batches)",
        flush=True,
    )


def rss(args: argparse.Namespace, widths: list[int], folder: Path) -> None:
    """Peak RSS of ours in fresh processes at 10k and 100k rows (flat: memory is O(p²))."""
    for n in (10_000, 100_000):
        store = folder / f"rss{n}.h5"
        write_store(store, n, widths)
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent
        code = (
            "import json, time\n"
            "from lossxfer.similarity import CkaConfig, run_cka\n"
            "t = time.perf_counter()\n"
            f"run_cka(CkaConfig({str(store)!r}, estimator='debiased', device={args.device!r}))\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
            "print(json.dumps([time.perf_counter() - t, int(hwm.split()[1]) / 1024]))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr)
        seconds, peak_mib = json.loads(out.stdout)
        size_mib = store.stat().st_size / 2**20
        print(
            f"rss: n={n:>7}  store {size_mib:7.0f} MiB  debiased {seconds:6.1f} s  "
            f"peak RSS {peak_mib:6.0f} MiB",
            flush=True,
        )
        store.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--widths", default="64,128,256,512,1024,2048")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--ref", choices=["cached", "per-pair", "none"], default="cached")
    parser.add_argument("--rss", action="store_true", help="also compare peak RSS at 10k/100k")
    parser.add_argument("--rss-only", action="store_true", help="only the peak RSS comparison")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.rss_only:
            store = folder / "bench.h5"
            write_store(store, args.n, widths)
            compare(args, store, widths)
            store.unlink()
        if args.rss or args.rss_only:
            rss(args, widths, folder)
    if not args.rss_only:
        usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"(this process peaked at {usage:.0f} MiB, mostly the references' n × n Grams)")


if __name__ == "__main__":
    main()
