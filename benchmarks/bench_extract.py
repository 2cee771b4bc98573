"""Extraction speed and memory (docs/benchmarks.md: ratios printed, never asserted in tests).

1. Throughput: `extract` rows/s over the bare forward-pass rate of the same network on the same
   images (batches prepared beforehand, inference mode, no hooks, no I/O), for smallcnn on
   digits (8 px) and resnet18 on synthetic 32 px images. Both sides run with the same torch
   thread count: the one `extract`'s policy (`backend.cpu_threads`) picks for the model, or
   --threads. The extraction figure is rows ÷ `timing.stream_s` (loading, forward, pooling and
   writing, without the one-off model and data set-up). The two sides alternate A B B A … so
   background load hits both alike; the machine load (1-minute load average) is printed before
   and after. Target: ≥ 0.95.
2. Memory: peak RSS of `extract` runs of growing N (each in a fresh process), next to what the
   input images alone take. Streaming means peak RSS grows only by the images (the synthetic
   data set lives in memory), never by the store.

Usage: python benchmarks/bench_extract.py [--rows 2048] [--repeats 5] [--threads N]
       [--memory-rows 10000,30000,100000]
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
    repeats: int, threads: int | None,
) -> dict[str, float]:  # fmt: skip
    """Rates of both sides, alternating A B B A …; best of each and the median paired ratio."""
    import statistics

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

    def bare() -> float:
        with torch.inference_mode():
            network(batches[0])  # warm-up
            tick = time.perf_counter()
            for x in batches:
                network(x)
            return len(images) / (time.perf_counter() - tick)

    def extract(r: int) -> float:
        config = ExtractConfig(
            checkpoint=str(ckpt), data=data, out=str(folder / f"{arch}-{layers}-{r}.h5"),
            splits=("train",), layers=tuple(layers.split(",")), batch_size=batch, device="cpu",
            val_fraction=0.0, threads=used,
        )  # fmt: skip
        timing = run_extract(config).timing
        assert timing["threads"] == used
        return len(images) / timing["stream_s"]

    with cpu_threads(torch.device("cpu"), threads, network, shape) as used:
        rates: dict[str, list[float]] = {"bare": [], "extract": []}
        for r in range(repeats):
            order = ("bare", "extract") if r % 2 == 0 else ("extract", "bare")
            for side in order:
                rates[side].append(bare() if side == "bare" else extract(r))
    ratios = [e / b for e, b in zip(rates["extract"], rates["bare"], strict=True)]
    best_bare, best_extract = max(rates["bare"]), max(rates["extract"])
    return {
        "rows": len(images), "threads": used, "bare": best_bare, "extract": best_extract,
        "ratio": best_extract / best_bare, "median_ratio": statistics.median(ratios),
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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="both sides (default: auto)")
    parser.add_argument("--memory-rows", default="10000,30000,100000")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch default "
          f"{torch.get_num_threads()} threads; {load()}")  # fmt: skip
    cases = [
        ("smallcnn", "digits", (1, 8, 8)),
        ("resnet18", f"synthetic:classes=10,size=32,channels=3,train={args.rows // 10},test=1",
         (3, 32, 32)),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for arch, data, shape in cases:
            for layers in ("penultimate,logits", "all"):
                r = throughput(folder, arch, data, shape, args.batch_size, layers, args.repeats,
                               args.threads)  # fmt: skip
                print(f"{arch} {shape[1]} px ({data.split(':')[0]}), {r['rows']} rows, batch "
                      f"{args.batch_size}, --layers {layers}, {r['threads']} thread(s) both "
                      f"sides: bare forward {r['bare']:.0f} rows/s, extract {r['extract']:.0f} "
                      f"rows/s, ratio {r['ratio']:.3f} (best of {args.repeats} each, A/B "
                      f"interleaved; median of paired ratios {r['median_ratio']:.3f}); {load()}",
                      flush=True)  # fmt: skip
        for m in memory(folder, [int(n) for n in args.memory_rows.split(",") if n]):
            print(f"smallcnn 8 px, --layers all, float16, {m['rows']} rows: peak RSS "
                  f"{m['peak_rss_mb']:.0f} MiB (images in memory {m['images_mb']:.0f} MiB, store "
                  f"{m['store_mb']:.0f} MiB), {m['rows_per_s']:.0f} rows/s")  # fmt: skip


if __name__ == "__main__":
    main()
