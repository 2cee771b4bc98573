"""CKA speed and agreement: `lossxfer cka` (exact and `--precision mixed`) against four references
on the same two float32 stores (6 layers 64–2048 wide by default, all 36 layer pairs, linear):

- feature-space numpy baselines in float64 and in float32, written as a competent user would:
  read each layer, centre its columns, cache each layer's ‖XᵀX‖_F, one XᵀY per pair;
- Gram references written like Kornblith et al.'s demo: each layer's centred n × n Gram cached
  (one dot per pair), and Grams formed per pair (the demo's usage). They need n² memory, so they
  run only up to --gram-max-n rows (12 cached Grams of 10,000 rows take 9.6 GB).

Every timed side reads the stores itself. The sides run interleaved (A, B, C, ... then again) in
one process with the same BLAS thread count, and the median of --repeat rounds is compared; the
load average is printed with each round because other jobs may share the machine. GFLOP/s count
the arithmetic that exact CKA cannot avoid (2·n·Pa·Pb for the cross products plus n·w(w+1) per
layer for the symmetric ones) against float64/float32 GEMM peaks measured here, before and
after. Peak RSS of ours is measured in fresh processes at each n: it should not grow with n.

Usage: .venv/bin/python benchmarks/bench_cka.py [--quick] [--n 10000,50000] [--repeat 3]
       [--threads 2] [--widths 64,128,256,512,1024,2048] [--gram-max-n 5000] [--per-pair]
       [--minibatch] [--cpu-time] [--no-rss] [--backend numpy|torch|cupy --device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from lossxfer.similarity import CkaConfig, run_cka
from lossxfer.similarity.run import batch_plan
from lossxfer.store import LayerSpec, StoreWriter, open_store


def write_store(path: Path, n: int, widths: list[int], seed: int) -> None:
    """Network-like float32 activations (post-ReLU, shared latent), written in row blocks."""
    rng = np.random.default_rng(seed)
    latent = 32
    proj = [np.random.default_rng(w).normal(size=(latent, w)) / np.sqrt(latent) for w in widths]
    names = [f"block{i + 1}" for i in range(len(widths))]
    specs = {k: LayerSpec(w, (w,), "avg") for k, w in zip(names, widths, strict=True)}
    attrs = {"model": {"arch": "bench", "objective": f"seed{seed}"}, "dataset": {"label": "bench"}}
    base = np.random.default_rng(1234)  # the two stores share their latent: related layers
    with StoreWriter(path, attrs) as w:
        w.create_split("test", n, specs)
        for lo in range(0, n, 4096):
            rows = min(4096, n - lo)
            z = base.normal(size=(rows, latent))
            layers = {}
            for k, p, width in zip(names, proj, widths, strict=True):
                noise = rng.normal(size=(rows, width), scale=0.5)
                layers[k] = np.maximum(z @ p + noise, 0).astype(np.float32)
            w.write("test", lo, np.zeros(rows, np.int64), np.arange(lo, lo + rows), layers)


def read_layers(path: Path) -> list[np.ndarray]:
    with open_store(path) as s:
        return [s.read("test", name) for name in s.layers("test")]


def gemm_peak(dtype: Any, device: str) -> float:
    """GFLOP/s of a 4096³ matrix product in `dtype` on the device: best of 3."""
    a = np.random.default_rng(0).random((4096, 4096)).astype(dtype)
    if device.startswith("cuda"):
        import torch

        t = torch.from_numpy(a).to(device)

        def product() -> None:
            t @ t
            torch.cuda.synchronize(device)

        product()
    else:

        def product() -> None:
            a @ a

    best = min(_timed(product)[0] for _ in range(3))
    return 2 * 4096**3 / best / 1e9


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result): CPU seconds of this process with --cpu-time, else wall seconds."""
    start = Clock.now()
    out = fn()
    return Clock.now() - start, out


class Clock:
    """--cpu-time: on a machine shared with other jobs, wall time measures them too."""

    now = time.perf_counter


# -- references --------------------------------------------------------------------------------


def feature_baseline(a: Path, b: Path, dtype: Any) -> np.ndarray:
    """Centre columns, cache ‖XᵀX‖_F per layer, ‖XᵀY‖²_F per pair (numpy picks syrk for XᵀX)."""
    xs, ys = ([x.astype(dtype) for x in read_layers(p)] for p in (a, b))
    for x in xs + ys:
        x -= x.mean(0)
    norm_x = [np.linalg.norm(x.T @ x) for x in xs]
    norm_y = [np.linalg.norm(y.T @ y) for y in ys]
    out = np.empty((len(xs), len(ys)))
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            out[i, j] = np.linalg.norm(x.T @ y) ** 2 / (norm_x[i] * norm_y[j])
    return out


def centred_gram(x: np.ndarray) -> np.ndarray:
    """Kornblith et al.'s demo: gram_linear, then center_gram (biased)."""
    gram = x @ x.T
    means = gram.mean(0, dtype=np.float64)
    means -= means.mean() / 2
    gram -= means[:, None]
    gram -= means[None, :]
    return gram


def gram_reference(a: Path, b: Path, per_pair: bool) -> np.ndarray:
    """cka(gram(x), gram(y)): Grams cached per layer, or formed again for every pair."""
    xs, ys = ([x.astype(np.float64) for x in read_layers(p)] for p in (a, b))
    out = np.empty((len(xs), len(ys)))
    if per_pair:
        for i, x in enumerate(xs):
            for j, y in enumerate(ys):
                gx, gy = centred_gram(x), centred_gram(y)
                out[i, j] = gx.ravel() @ gy.ravel() / (np.linalg.norm(gx) * np.linalg.norm(gy))
        return out
    gxs, gys = [centred_gram(x) for x in xs], [centred_gram(y) for y in ys]
    nx, ny = [np.linalg.norm(g) for g in gxs], [np.linalg.norm(g) for g in gys]
    for i, gx in enumerate(gxs):
        for j, gy in enumerate(gys):
            out[i, j] = gx.ravel() @ gy.ravel() / (nx[i] * ny[j])
    return out


def ours(a: Path, b: Path | None, args: argparse.Namespace, **options: Any) -> np.ndarray:
    config = CkaConfig(
        str(a), None if b is None else str(b), backend=args.backend, device=args.device, **options
    )
    return np.array(run_cka(config).metrics["matrix"], dtype=float)


def compare_minibatch(a: Path, n: int, args: argparse.Namespace) -> None:
    """Minibatch CKA of store A's layers vs the per-pair loop, same batches (one store)."""
    plan = batch_plan(n, 256, 1, 0)
    data = [x.astype(np.float64) for x in read_layers(a)]
    t_ours, m_ours = _timed(lambda: ours(a, None, args, estimator="minibatch"))
    t_ref, m_ref = _timed(lambda: minibatch_reference(data, plan, args.device))
    print(
        f"minibatch (m = 256, {len(plan)} batches, one store): lossxfer {t_ours:.2f} s, "
        f"per-pair loop {t_ref:.2f} s: ×{t_ref / t_ours:.1f}; "
        f"max|Δ| {np.abs(m_ref - m_ours).max():.1e}",
        flush=True,
    )


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


def compare(n: int, a: Path, b: Path, widths: list[int], args: argparse.Namespace) -> None:
    sides: dict[str, Callable[[], np.ndarray]] = {
        "lossxfer exact": lambda: ours(a, b, args),
        "lossxfer mixed": lambda: ours(a, b, args, precision="mixed"),
        "numpy float64": lambda: feature_baseline(a, b, np.float64),
        "numpy float32": lambda: feature_baseline(a, b, np.float32),
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    out: dict[str, np.ndarray] = {}
    for round_ in range(args.repeat):
        for name, fn in sides.items():
            seconds, out[name] = _timed(fn)
            times[name].append(seconds)
        print(
            f"  round {round_ + 1}: load {os.getloadavg()[0]:.1f}; "
            + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
            flush=True,
        )
    if n <= args.gram_max_n:  # once each: an order of magnitude slower
        refs = {"Gram cached": False, **({"Gram per pair": True} if args.per_pair else {})}
        for name, per_pair in refs.items():
            seconds, out[name] = _timed(lambda p=per_pair: gram_reference(a, b, per_pair=p))  # type: ignore[misc]
            times[name] = [seconds]
            print(f"  {name}: {seconds:.2f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    total_a = sum(widths)
    flops = 2 * n * total_a * total_a + 2 * n * sum(w * (w + 1) for w in widths)
    exact = out["lossxfer exact"]
    t_exact = statistics.median(times["lossxfer exact"])
    print(f"n = {n}: median of {args.repeat} ({flops / 1e9:.0f} GFLOP of unavoidable arithmetic)")
    for name, ts in times.items():
        t = statistics.median(ts)
        peak = args.peak32 if ("mixed" in name or "float32" in name) else args.peak64
        rate = flops / t / 1e9
        diff = float(np.nanmax(np.abs(out[name] - exact)))
        speed = f"{t / t_exact:5.2f}× exact's time" if name != "lossxfer exact" else " " * 17
        print(
            f"  {name:15s} {t:8.2f} s  {speed}  {rate:6.1f} GFLOP/s = {rate / peak:4.0%} of "
            f"{'f32' if peak == args.peak32 else 'f64'} peak  max|Δ| vs exact {diff:.1e}",
            flush=True,
        )


def peak_rss(path_a: Path, path_b: Path, threads: int) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of ours in a fresh process (VmHWM: not inherited from us)."""
    code = (
        "import json, time\n"
        "from lossxfer.similarity import CkaConfig, run_cka\n"
        "t = time.perf_counter()\n"
        f"run_cka(CkaConfig({str(path_a)!r}, {str(path_b)!r}, backend='numpy'))\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(json.dumps([time.perf_counter() - t, int(hwm.split()[1]) / 1024]))\n"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if run.returncode:
        raise SystemExit(run.stderr)
    seconds, mib = json.loads(run.stdout)
    return seconds, mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="10000,50000", help="comma-separated row counts")
    parser.add_argument("--widths", default="64,128,256,512,1024,2048")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gram-max-n", type=int, default=5_000, help="Grams need 8·n² bytes each")
    parser.add_argument("--per-pair", action="store_true", help="also Grams formed per pair")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--minibatch", action="store_true", help="also minibatch vs a loop")
    parser.add_argument("--backend", default="numpy", help="ours: numpy, torch or cupy")
    parser.add_argument("--device", default="cpu", help="ours (and the loop): cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="n = 3000, 4 layers, one round")
    parser.add_argument("--dir", help="where to write the stores (default: a temporary folder)")
    parser.add_argument(
        "--cpu-time", action="store_true", help="time CPU seconds (all threads), not wall"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still remove the stores
    if args.cpu_time:
        Clock.now = time.process_time
    if args.quick:
        args.n, args.widths, args.repeat = "3000", "64,128,256,512", 1
        args.per_pair = args.minibatch = True
    sizes = [int(v) for v in args.n.split(",")]
    widths = [int(w) for w in args.widths.split(",")]
    with threadpool_limits(args.threads), tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        blas = {i.get("internal_api"): i.get("num_threads") for i in threadpool_info()}
        print(
            f"{os.cpu_count()} CPUs, BLAS threads {blas} on every side; load {os.getloadavg()}; "
            f"times in {'CPU' if args.cpu_time else 'wall'} seconds",
            flush=True,
        )
        args.peak64, args.peak32 = (
            gemm_peak(np.float64, args.device),
            gemm_peak(np.float32, args.device),
        )
        print(
            f"GEMM peak (4096³, best of 3): float64 {args.peak64:.1f}, "
            f"float32 {args.peak32:.1f} GFLOP/s",
            flush=True,
        )
        rss = []
        for n in sizes:
            a, b = Path(tmp) / f"a{n}.h5", Path(tmp) / f"b{n}.h5"
            write_store(a, n, widths, seed=1)
            write_store(b, n, widths, seed=2)
            compare(n, a, b, widths, args)
            if args.minibatch and n == sizes[0]:
                compare_minibatch(a, n, args)
            if not args.no_rss:
                rss.append((n, *peak_rss(a, b, args.threads)))
            a.unlink()
            b.unlink()
        for n, seconds, mib in rss:
            print(
                f"peak RSS of lossxfer exact (fresh process): n = {n:>6}: {mib:6.0f} MiB "
                f"({seconds:.1f} s)"
            )
        after64, after32 = gemm_peak(np.float64, args.device), gemm_peak(np.float32, args.device)
        print(
            f"GEMM peak again: float64 {after64:.1f}, float32 {after32:.1f} GFLOP/s; "
            f"load {os.getloadavg()}"
        )


if __name__ == "__main__":
    main()
