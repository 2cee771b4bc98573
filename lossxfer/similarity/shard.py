"""CKA shard files: one part's accumulators (`--shard i/N`), summed exactly by `--merge`.

A shard holds the float64 sums of its range of rows (or minibatches), the range, the layers and
the stores' provenance with a checksum of their sample index. Sums add, so the merge of N shards
is the unsharded computation up to float64 summation order. HDF5 (`.h5`) or JSON (`.json`;
floats written with round-trip precision), tagged `lossxfer.cka-shard/1`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lossxfer import __version__
from lossxfer.errors import InputError, UsageError
from lossxfer.formats import CKA_SHARD, check_format
from lossxfer.fsio import atomic_path, require_file
from lossxfer.progress import ProgressFn, no_progress
from lossxfer.results import Result, input_record
from lossxfer.shards import shard_range
from lossxfer.similarity.estimators import Layout, Sums
from lossxfer.similarity.result import CkaResult
from lossxfer.similarity.run import CkaConfig, accumulate, finish, open_job, record, units

# Fields that must agree between the shards of one computation.
_SAME = ("estimator", "split", "layers_a", "layers_b", "widths_a", "widths_b", "pick", "n", "unit")
_SAME_MORE = ("total", "parts", "params", "identity")


@dataclass
class Shard:
    meta: dict[str, Any]
    sums: Sums
    fixed: dict[str, np.ndarray]


def compute_shard(config: CkaConfig, progress: ProgressFn | None = None) -> Shard:
    """The accumulators of part i of N (`config.shard`) of the rows or minibatches."""
    config.check()
    if config.shard is None:
        raise UsageError("--shard i/N is needed to write a shard")
    index, parts = config.shard
    with open_job(config) as job:
        unit, total = units(job)
        lo, hi = shard_range(total, config.shard)
        acc, fixed = accumulate(job, lo, hi, progress or no_progress)
        stores = job.stores()
        meta = {
            "estimator": config.estimator,
            "precision": config.precision,
            "split": config.split,
            "layers_a": job.layers_a,
            "layers_b": job.layers_b,
            "widths_a": list(job.layout.widths_a),
            "widths_b": None if job.layout.widths_b is None else list(job.layout.widths_b),
            "pick": job.pick,
            "n": job.n,
            "unit": unit,
            "total": total,
            "parts": parts,
            "shard": index,
            "lo": lo,
            "hi": hi,
            "rows": acc.rows,
            "params": {
                "batch_size": config.batch_size,
                "passes": config.passes,
                "seed": config.seed,
            }
            if unit == "batches"
            else {},
            "identity": [[s["model"], s["index_sha256"]] for s in stores],
            "stores": stores,
            "config": dataclasses.asdict(config),
            "backend": acc.backend,
            "lossxfer_version": __version__,
        }
        return Shard(meta, acc.sums(), fixed)


def write_shard(shard: Shard, path: str | os.PathLike[str], force: bool = False) -> Path:
    """Write atomically: JSON for a `.json` path, HDF5 otherwise."""
    out = Path(path)
    with atomic_path(out, force) as tmp:
        if out.suffix == ".json":
            doc = {
                "format": CKA_SHARD,
                "meta": shard.meta,
                "sums": {k: v.tolist() for k, v in shard.sums.items()},
                "fixed": {k: v.tolist() for k, v in shard.fixed.items()},
            }
            tmp.write_text(json.dumps(doc), encoding="utf-8")
        else:
            import h5py

            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = CKA_SHARD
                f.attrs["meta"] = json.dumps(shard.meta)
                for group, arrays in (("sums", shard.sums), ("fixed", shard.fixed)):
                    g = f.create_group(group)
                    for name, value in arrays.items():
                        g.create_dataset(name, data=np.asarray(value, dtype=np.float64))
    return out


def read_shard(path: str | os.PathLike[str]) -> Shard:
    """Read and check a shard file; anything malformed is an InputError naming the file."""
    p = require_file(path)
    try:
        if p.suffix == ".json":
            doc = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise InputError(f"{p}: not a CKA shard (not a JSON object)")
            check_format(doc.get("format"), CKA_SHARD, p)
            meta, sums, fixed = doc.get("meta"), doc.get("sums"), doc.get("fixed")
            if not (isinstance(meta, dict) and isinstance(sums, dict) and isinstance(fixed, dict)):
                raise InputError(f"{p}: CKA shard lacks its meta, sums or fixed objects")
            arrays = [
                {k: np.asarray(v, dtype=np.float64) for k, v in d.items()} for d in (sums, fixed)
            ]
        else:
            import h5py

            with h5py.File(p, "r") as f:
                check_format(_text(f.attrs.get("format")), CKA_SHARD, p)
                meta = json.loads(_text(f.attrs.get("meta")) or "null")
                if not isinstance(meta, dict) or "sums" not in f or "fixed" not in f:
                    raise InputError(f"{p}: CKA shard lacks its meta, sums or fixed groups")
                arrays = [
                    {k: np.asarray(ds[...], dtype=np.float64) for k, ds in f[g].items()}
                    for g in ("sums", "fixed")
                ]
    except InputError:
        raise
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"{p}: unreadable CKA shard ({exc})") from None
    missing = [
        k for k in (*_SAME, *_SAME_MORE, "lo", "hi", "rows", "stores", "config") if k not in meta
    ]
    if missing:
        raise InputError(f"{p}: CKA shard meta lacks {', '.join(missing)}")
    _check_meta(p, meta)
    for group in arrays:
        for name, value in group.items():
            if not np.isfinite(value).all():
                raise InputError(f"{p}: CKA shard accumulator {name!r} holds NaN or infinity")
    return Shard(meta, arrays[0], arrays[1])


def _check_meta(path: Path, meta: dict[str, Any]) -> None:
    """Types of the meta fields the merge computes with (a tampered shard → exit 3)."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    ints = ("n", "total", "parts", "shard", "lo", "hi", "rows")
    bad = [k for k in ints if not is_int(meta[k]) or meta[k] < 0]
    for key in ("layers_a", "layers_b"):
        if not isinstance(meta[key], list) or not all(isinstance(v, str) for v in meta[key]):
            bad.append(key)
    for key in ("widths_a", "widths_b"):
        value = meta[key]
        if key == "widths_b" and value is None:
            continue
        if not isinstance(value, list) or not all(is_int(v) and v > 0 for v in value):
            bad.append(key)
    stores = meta["stores"]
    if not (
        isinstance(stores, list)
        and 1 <= len(stores) <= 2
        and all(isinstance(x, dict) and isinstance(x.get("model"), dict) for x in stores)
        and all("dataset" in x for x in stores)
    ):
        bad.append("stores")
    if not isinstance(meta["config"], dict):
        bad.append("config")
    if bad:
        raise InputError(f"{path}: CKA shard meta has malformed {', '.join(bad)}")
    if not meta["lo"] <= meta["hi"] <= meta["total"]:
        raise InputError(f"{path}: CKA shard range [{meta['lo']}, {meta['hi']}) is not within "
                         f"[0, {meta['total']})")  # fmt: skip


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def merge_shards(paths: list[Path], progress: ProgressFn | None = None) -> Result:
    """Sum the shards of one computation and finish the CKA matrix.

    Shards must agree on estimator, split, layers, stores (model and sample index) and options,
    and their ranges must tile [0, total) exactly; otherwise InputError (exit 3).
    """
    if not paths:
        raise UsageError("--merge needs the shard files to merge")
    started = time.perf_counter()
    shards = [read_shard(p) for p in paths]
    first, where = shards[0].meta, paths[0]
    for path, shard in zip(paths[1:], shards[1:], strict=True):
        for key in (*_SAME, *_SAME_MORE, "precision"):
            mine, theirs = shard.meta.get(key, "exact"), first.get(key, "exact")  # 0.1 shards
            if mine != theirs:
                raise InputError(
                    f"{path}: shard differs from {where} in {key!r} "
                    f"({mine!r} vs {theirs!r}); not parts of one computation"
                )
        for name, value in shards[0].fixed.items():
            if name not in shard.fixed or not np.array_equal(shard.fixed[name], value):
                raise InputError(f"{path}: shard differs from {where} in its {name!r}")
        if set(shard.sums) != set(shards[0].sums):
            raise InputError(f"{path}: shard holds other accumulators than {where}")
    _check_tiling(paths, shards)
    sums: Sums = {}
    for done, shard in enumerate(shards, 1):
        for name, value in shard.sums.items():
            if name in sums and sums[name].shape != value.shape:
                raise InputError(
                    f"{paths[done - 1]}: accumulator {name!r} has shape {value.shape}, "
                    f"{paths[0]}'s has {sums[name].shape}"
                )
            sums[name] = sums[name] + value if name in sums else value.copy()
        (progress or no_progress)("cka merge", done, len(shards))
    widths_b = first["widths_b"]
    layout = Layout(tuple(first["widths_a"]), None if widths_b is None else tuple(widths_b))
    rows = sum(int(s.meta["rows"]) for s in shards)
    config = {**first["config"], "shard": None}
    matrix = finish(config, layout, sums, rows, first["pick"])
    extra = {"shards": len(shards)}
    if first["unit"] == "batches":
        extra["batches"] = first["total"]
    result = CkaResult(
        estimator=first["estimator"],
        layers_a=first["layers_a"],
        layers_b=first["layers_b"],
        matrix=matrix,
        rows=first["n"],
        extra=extra,
    )
    inputs = [input_record(p) for p in paths]
    timing = {"backend": "numpy", "device": "cpu"}
    return record(result, first["stores"], config, started, timing, inputs)


def _check_tiling(paths: list[Path], shards: list[Shard]) -> None:
    """The shards' [lo, hi) ranges must cover [0, total) once each."""
    seen: dict[int, Path] = {}
    for path, shard in zip(paths, shards, strict=True):
        index = shard.meta["shard"]
        if index in seen:
            raise InputError(f"{path}: shard {index} is given twice (also {seen[index]})")
        seen[index] = path
    order = sorted(range(len(shards)), key=lambda k: (shards[k].meta["lo"], shards[k].meta["hi"]))
    unit, total = shards[0].meta["unit"], shards[0].meta["total"]
    reached = 0
    for k in order:
        lo, hi = shards[k].meta["lo"], shards[k].meta["hi"]
        if lo > reached:
            raise InputError(
                f"{paths[0]}: no shard given covers {unit} [{reached}, {lo}) (is one missing?)"
            )
        if lo < reached:
            raise InputError(f"{paths[k]}: {unit} [{lo}, {hi}) overlap another shard")
        reached = hi
    if reached != total:
        raise InputError(
            f"{paths[0]}: no shard given covers {unit} [{reached}, {total}) (is one missing?)"
        )
