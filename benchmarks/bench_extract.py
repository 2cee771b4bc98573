"""Extraction speed and memory (docs/benchmarks.md: ratios printed, never asserted in tests).

1. Throughput: `extract` rows/s over the bare forward-pass rate of the same network on the same
   images (batches prepared beforehand, inference mode, no hooks, no I/O), for smallcnn on
   digits (8 px, 1,437 rows), smallcnn on ten times as many 8 px synthetic rows, and resnet18 on
   synthetic 32 px images. Both sides run with the same torch thread count: the one `extract`'s
   policy (`backend.cpu_threads`) picks for the model, or --threads. The extraction figure is
   rows ÷ `timing.stream_s` (loading, forward, pooling and writing, up to the store closed,
   flushed, synced and renamed; without the one-off model and data set-up). The two sides
   alternate A B B A … until each has run --repeats times and --seconds in all, so background
   load hits both alike; printed: the median of the paired ratios with its 10th–90th percentile
   range, the ratio of the best runs, the machine load (1-minute load average) before and after,
   and `timing.close_s`, the store's fixed closing cost inside stream_s. Target: ≥ 0.95.
2. Memory: peak RSS of `extract` runs of growing N (each in a fresh process), next to what the
   input images alone take. Streaming means peak RSS grows only by the images (the synthetic
   data set lives in memory), never by the store.

Usage: python benchmarks/bench_extract.py [--rows 2048] [--repeats 5] [--seconds 10]
       [--threads N] [--memory-rows 10000,30000,100000] [--arch smallcnn,resnet18]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def checkpoint(folder: Path, arch: str, size: int, channels: int, data: str) -> Path:
    from test_checkpoint import make_checkpoint

    from lossxfer.data import InputSpec

    path = folder / f"{arch}.safetensors"
    path.unlink(missing_ok=True)
    spec = InputSpec(channels, size, (0.5,) * channels, (0.29,) * channels)
    make_checkpoint(path, arch, classes=tuple(range(10)), input_spec=spec, data=data)
    return path


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def throughput(
    folder: Path, arch: str, data: str, shape: tuple[int, int, int], batch: int, layers: str,
    repeats: int, seconds: float, threads: int | None,
) -> dict[str, float]:  # fmt: skip
    """Rates of both sides, alternating A B B A … for at least `repeats` runs and `seconds`."""
    import statistics

    import numpy as np
    import torch

    from lossxfer.backend import cpu_threads
    from lossxfer.checkpoint import load_checkpoint
    from lossxfer.data import load_data
    from lossxfer.extract import ExtractConfig, run_extract

    channels, size, _ = shape
    ckpt = checkpoint(folder, arch, size, channels, data)
    network, _ = load_checkpoint(ckpt)
    network.eval()
    images, _ = load_data(data, val_fraction=0.0).split("train").dataset.tensors()
    batches = list(images.split(batch))
    closes: list[float] = []

    def bare() -> float:
        with torch.inference_mode():
            network(batches[0])  # warm-up
            tick = time.perf_counter()
            for x in batches:
                network(x)
            return len(images) / (time.perf_counter() - tick)

    def extract() -> float:
        out = folder / f"{arch}-{layers}.h5"
        config = ExtractConfig(
            checkpoint=str(ckpt), data=data, out=str(out), splits=("train",),
            layers=tuple(layers.split(",")), batch_size=batch, device="cpu", val_fraction=0.0,
            threads=used, force=True,
        )  # fmt: skip
        timing = run_extract(config).timing
        assert timing["threads"] == used
        closes.append(timing["close_s"])
        return len(images) / timing["stream_s"]

    with cpu_threads(torch.device("cpu"), threads, network, shape) as used:
        rates: dict[str, list[float]] = {"bare": [], "extract": []}
        r = 0
        while r < repeats or min(len(images) * sum(1 / v for v in rates[side])
                                 for side in rates) < seconds:  # fmt: skip
            order = ("bare", "extract") if r % 2 == 0 else ("extract", "bare")
            for side in order:
                rates[side].append(bare() if side == "bare" else extract())
            r += 1
    ratios = [e / b for e, b in zip(rates["extract"], rates["bare"], strict=True)]
    best_bare, best_extract = max(rates["bare"]), max(rates["extract"])
    low, high = np.percentile(ratios, [10, 90])
    return {
        "rows": len(images), "threads": used, "runs": r, "bare": best_bare,
        "extract": best_extract, "ratio": best_extract / best_bare,
        "median_ratio": statistics.median(ratios), "low": float(low), "high": float(high),
        "close_ms": 1000 * statistics.median(closes),
        "stream_ms": 1000 * statistics.median(len(images) / v for v in rates["extract"]),
    }  # fmt: skip


# Peak RSS from VmHWM: getrusage's ru_maxrss survives exec, so it would report the parent's.
MEMORY_RUN = """
import json, re, sys
from pathlib import Path
from lossxfer.extract import ExtractConfig, run_extract
t = run_extract(ExtractConfig(**json.loads(sys.argv[1]))).timing
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())
print(json.dumps({"peak_rss_mb": int(hwm.group(1)) / 1024, "rows_per_s": t["rows_per_s"]}))
"""


def memory(folder: Path, sizes: list[int]) -> list[dict[str, float]]:
    out = []
    for n in sizes:
        data = f"synthetic:classes=10,size=8,train={n // 10},test=1"
        ckpt = checkpoint(folder, "smallcnn", 8, 1, data)
        store = folder / f"mem{n}.h5"
        config = {"checkpoint": str(ckpt), "data": data, "out": str(store), "splits": ["train"],
                  "layers": ["all"], "dtype": "float16", "device": "cpu"}  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", MEMORY_RUN, json.dumps(config)],
                              capture_output=True, text=True, check=True, cwd=REPO)  # fmt: skip
        row = json.loads(proc.stdout)
        row.update(rows=n, images_mb=n * 8 * 8 * 4 / 2**20, store_mb=store.stat().st_size / 2**20)
        out.append(row)
        store.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048, help="resnet18 rows (digits: all)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="at least this many runs a side")
    parser.add_argument("--seconds", type=float, default=10.0, help="and this long a side")
    parser.add_argument("--threads", type=int, default=None, help="both sides (default: auto)")
    parser.add_argument("--memory-rows", default="10000,30000,100000")
    parser.add_argument("--arch", default="smallcnn,resnet18", help="the cases to run")
    args = parser.parse_args()
    unknown = set(args.arch.split(",")) - {"smallcnn", "resnet18"}
    if unknown:
        parser.error(f"--arch: unknown {', '.join(sorted(unknown))} (smallcnn, resnet18)")
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch default "
          f"{torch.get_num_threads()} threads; {load()}")  # fmt: skip
    cases = [
        ("smallcnn", "digits", (1, 8, 8)),
        ("smallcnn", "synthetic:classes=10,size=8,train=1437,test=1", (1, 8, 8)),
        ("resnet18", f"synthetic:classes=10,size=32,channels=3,train={args.rows // 10},test=1",
         (3, 32, 32)),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for arch, data, shape in [case for case in cases if case[0] in args.arch.split(",")]:
            for layers in ("penultimate,logits", "all"):
                r = throughput(folder, arch, data, shape, args.batch_size, layers, args.repeats,
                               args.seconds, args.threads)  # fmt: skip
                print(
                    f"{arch} {shape[1]} px ({data.split(':')[0]}), {r['rows']} rows, batch "
                    f"{args.batch_size}, --layers {layers}, {r['threads']} thread(s) both sides, "
                    f"{r['runs']} runs each (A/B interleaved): ratio {r['median_ratio']:.3f} "
                    f"(median of paired ratios; 10-90%: {r['low']:.3f}-{r['high']:.3f}), best "
                    f"runs: bare forward {r['bare']:.0f} rows/s, extract {r['extract']:.0f} "
                    f"rows/s, ratio {r['ratio']:.3f}; extract {r['stream_ms']:.0f} ms, of which "
                    f"closing the store {r['close_ms']:.1f} ms; {load()}",
                    flush=True,
                )
        for m in memory(folder, [int(n) for n in args.memory_rows.split(",") if n]):
            print(f"smallcnn 8 px, --layers all, float16, {m['rows']} rows: peak RSS "
                  f"{m['peak_rss_mb']:.0f} MiB (images in memory {m['images_mb']:.0f} MiB, store "
                  f"{m['store_mb']:.0f} MiB), {m['rows_per_s']:.0f} rows/s")  # fmt: skip


if __name__ == "__main__":
    main()
