"""Extraction from an imported model against a bare timm forward pass (ratios printed only).

A timm ResNet-50 with random weights is saved with safetensors and imported (`lossxfer
import`, crop 1 so that 224 px images pass unchanged apart from normalisation); `extract
--layers penultimate,logits` then runs on synthetic 224 px images. The reference is timm's own
forward pass (`model(x)`) over the same images, prepared and normalised beforehand, in
inference mode. Both sides use the same torch thread count (the one extract's policy picks, or
--threads), alternate A B B A … and print the load. The extraction figure is rows ÷
`timing.stream_s` (loading, preprocessing, forward, pooling and writing). Target: ≥ 0.9.

Usage: python benchmarks/bench_zoo.py [--model resnet50] [--rows 64] [--batch-size 32]
       [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="timm model name")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="both sides (default: auto)")
    args = parser.parse_args()
    import dataclasses

    import timm
    import torch
    from safetensors.torch import save_file

    from lossxfer.backend import cpu_threads
    from lossxfer.checkpoint import read_metadata
    from lossxfer.data import load_data
    from lossxfer.extract import ExtractConfig, run_extract
    from lossxfer.importer import import_model

    print(f"torch {torch.__version__}, timm {timm.__version__}, {os.cpu_count()} CPUs; {load()}")
    data = f"synthetic:classes=2,size=224,channels=3,train={args.rows // 2},test=1"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.manual_seed(0)
        model = timm.create_model(args.model).eval()
        save_file(model.state_dict(), str(folder / "w.safetensors"))
        ckpt = folder / "m.safetensors"
        import_model(f"timm:{args.model}", folder / "w.safetensors", ckpt, crop=1.0)
        spec = read_metadata(ckpt).input
        split = dataclasses.replace(load_data(data, val_fraction=0.0), input=spec).split("train")
        images = torch.stack([split.dataset[i][0] for i in range(len(split.dataset))])
        batches = list(images.split(args.batch_size))

        def bare() -> float:
            with torch.inference_mode():
                model(batches[0][:2])  # warm-up
                tick = time.perf_counter()
                for x in batches:
                    model(x)
                return len(images) / (time.perf_counter() - tick)

        def extract(r: int) -> float:
            config = ExtractConfig(
                checkpoint=str(ckpt), data=data, out=str(folder / f"a{r}.h5"), splits=("train",),
                batch_size=args.batch_size, device="cpu", val_fraction=0.0, threads=used,
                workers=0,
            )  # fmt: skip
            timing = run_extract(config).timing
            assert timing["threads"] == used
            return len(images) / timing["stream_s"]

        shape = (spec.channels, spec.size, spec.size)
        with cpu_threads(torch.device("cpu"), args.threads, model, shape) as used:
            rates: dict[str, list[float]] = {"bare": [], "extract": []}
            for r in range(args.repeats):
                order = ("bare", "extract") if r % 2 == 0 else ("extract", "bare")
                for side in order:
                    rates[side].append(bare() if side == "bare" else extract(r))
    ratios = [e / b for e, b in zip(rates["extract"], rates["bare"], strict=True)]
    best_bare, best_extract = max(rates["bare"]), max(rates["extract"])
    print(f"timm {args.model} imported, 224 px, {len(images)} rows, batch {args.batch_size}, "
          f"--layers penultimate,logits, {used} thread(s) both sides: bare timm forward "
          f"{best_bare:.1f} rows/s, extract {best_extract:.1f} rows/s, ratio "
          f"{best_extract / best_bare:.3f} (best of {args.repeats} each, A/B interleaved; median "
          f"of paired ratios {statistics.median(ratios):.3f}); {load()}")  # fmt: skip


if __name__ == "__main__":
    main()
