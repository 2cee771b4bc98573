"""Memory of the array API in rows: `lossxfer.cka` and `lossxfer.class_separation` on n × p
float32 arrays, next to the reference they avoid, an n × n float64 Gram matrix.

For each row count the extra memory at peak beyond the inputs is measured with tracemalloc
(numpy reports its buffers to it), with one BLAS thread; flat in rows means the last line's
ratio to the first stays near 1 while the Gram matrix grows as n².

    OMP_NUM_THREADS=1 python benchmarks/bench_api_memory.py [--rows 10000 50000] [--width 2048]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

import lossxfer


def peak(fn: Callable[..., Any], *args: Any) -> tuple[float, float, Any]:
    """(MiB allocated at peak while `fn(*args)` ran, seconds, its value)."""
    tracemalloc.start()
    start = time.perf_counter()
    value = fn(*args)
    seconds = time.perf_counter() - start
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top / 2**20, seconds, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--width", type=int, default=2048)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((args.width, args.width), dtype=np.float32) / args.width**0.5
    first: dict[str, float] = {}
    for n in args.rows:
        x = np.maximum(rng.standard_normal((n, args.width), dtype=np.float32), 0)
        y = np.empty_like(x)
        for lo in range(0, n, 4096):  # y = relu(x) W, built without a second full temporary
            np.matmul(x[lo : lo + 4096], mix, out=y[lo : lo + 4096])
        labels = rng.integers(0, 100, n)
        cka_mib, cka_s, value = peak(lossxfer.cka, x, y)
        sep_mib, sep_s, sep = peak(lossxfer.class_separation, x, labels)
        first.setdefault("cka", cka_mib)
        first.setdefault("sep", sep_mib)
        print(
            f"n={n} p={args.width}: inputs {(x.nbytes + y.nbytes) / 2**20:.0f} MiB | "
            f"cka {cka_mib:.0f} MiB ({cka_mib / first['cka']:.2f}× first), {cka_s:.0f} s, "
            f"CKA {value:.4f} | class_separation {sep_mib:.0f} MiB "
            f"({sep_mib / first['sep']:.2f}× first), {sep_s:.0f} s, R² {sep.r2:.4f} | "
            f"an n × n float64 Gram matrix: {n * n * 8 / 2**20:.0f} MiB"
        )


if __name__ == "__main__":
    main()
