"""Extraction speed and memory (DESIGN.md §5: ratios printed, never asserted in tests).

1. Throughput: `extract` rows/s over the bare forward-pass rate of the same ResNet-18 on the
   same synthetic 32 px images (batches prepared beforehand, inference mode, no hooks, no I/O).
   The extraction figure is rows ÷ `timing.stream_s` (loading, forward, pooling and writing,
   without the one-off model and data set-up). Target: ≥ 0.90.
2. Memory: peak RSS of `extract` runs of growing N (each in a fresh process), next to what the
   input images alone take. Streaming means peak RSS grows only by the images (the synthetic
   data set lives in memory), never by the store.

Usage: python benchmarks/bench_extract.py [--rows 2048] [--memory-rows 10000,30000,100000]
"""

from __future__ import annotations

import argparse
import json
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


def throughput(folder: Path, rows: int, batch: int, layers: str, repeats: int) -> dict[str, float]:
    """Best-of-`repeats` rates, bare and extract alternating (fair on a shared, noisy machine)."""
    import statistics

    import torch

    from lossxfer.checkpoint import load_checkpoint
    from lossxfer.data import load_data
    from lossxfer.extract import ExtractConfig, run_extract

    data = f"synthetic:classes=10,size=32,channels=3,train={rows // 10},test=1"
    ckpt = checkpoint(folder, "resnet18", 32, 3, data)
    network, _ = load_checkpoint(ckpt)
    network.eval()
    images, _ = load_data(data, val_fraction=0.0).split("train").dataset.tensors()
    batches = list(images.split(batch))
    bare, extract, ends = [], [], []
    for r in range(repeats):
        with torch.inference_mode():
            network(batches[0])  # warm-up
            tick = time.perf_counter()
            for x in batches:
                network(x)
            bare.append(len(images) / (time.perf_counter() - tick))
        config = ExtractConfig(
            checkpoint=str(ckpt), data=data, out=str(folder / f"{layers}-{r}.h5"),
            splits=("train",), layers=tuple(layers.split(",")), batch_size=batch, device="cpu",
        )  # fmt: skip
        timing = run_extract(config).timing
        extract.append(len(images) / timing["stream_s"])
        ends.append(len(images) / timing["wall_s"])
    ratios = [e / b for e, b in zip(extract, bare, strict=True)]
    return {"bare": max(bare), "extract": max(extract), "ratio": max(extract) / max(bare),
            "median_ratio": statistics.median(ratios), "end_to_end": max(ends)}  # fmt: skip


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
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-rows", default="10000,30000,100000")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for layers in ("penultimate,logits", "all"):
            r = throughput(folder, args.rows, args.batch_size, layers, args.repeats)
            print(f"resnet18 32 px, {args.rows} rows, batch {args.batch_size}, --layers {layers}: "
                  f"bare forward {r['bare']:.0f} rows/s, extract {r['extract']:.0f} rows/s, "
                  f"ratio {r['ratio']:.3f} (best of {args.repeats}; median of paired ratios "
                  f"{r['median_ratio']:.3f}; end to end {r['end_to_end']:.0f} rows/s)")  # fmt: skip
        for m in memory(folder, [int(n) for n in args.memory_rows.split(",") if n]):
            print(f"smallcnn 8 px, --layers all, float16, {m['rows']} rows: peak RSS "
                  f"{m['peak_rss_mb']:.0f} MiB (images in memory {m['images_mb']:.0f} MiB, store "
                  f"{m['store_mb']:.0f} MiB), {m['rows_per_s']:.0f} rows/s")  # fmt: skip


if __name__ == "__main__":
    main()
