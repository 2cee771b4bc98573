"""What a lossxfer file is: the kind is told by content (never by extension), then described.

Checkpoints are safetensors (8-byte header length, then a JSON header), activation stores are
HDF5 (8-byte signature), result records are JSON (`lossxfer.sniff`). Anything else, or a file
of the right container but without lossxfer metadata, is an InputError naming the file and
saying what it is. A checkpoint is described from its header alone, without torch, so `info`
answers in a fraction of a second; `extract` and `finetune` check its tensors against the model.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from lossxfer.errors import InputError, UsageError
from lossxfer.sniff import expect, safetensors_header


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """`{"path", "kind", "format", ...}`: the file's metadata, validated as its reader would."""
    kind = expect(path, "checkpoint", "store", "result")
    body = {"checkpoint": _checkpoint, "store": _store, "result": _result}[kind](Path(path))
    return {"path": str(path), "kind": kind, **body}


def _checkpoint(path: Path) -> dict[str, Any]:
    from lossxfer.checkpoint import CheckpointMeta
    from lossxfer.models import ARCHS
    from lossxfer.objectives import make_objective
    from lossxfer.zoo import is_outside, parse_arch

    tensors = safetensors_header(path)
    meta = CheckpointMeta.from_header(tensors.pop("__metadata__", None), path)
    try:  # what the loader rebuilds, checked without building it
        if is_outside(meta.arch):
            parse_arch(meta.arch)
        else:
            ARCHS.get(meta.arch)
        if not meta.imported:
            make_objective(meta.objective, meta.objective_opts)
    except UsageError as exc:
        raise InputError(f"{path}: cannot rebuild the model: {exc}") from None
    values = sum(math.prod(entry.get("shape", [])) for entry in tensors.values())
    header = meta.to_header()
    out: dict[str, Any] = {"format": meta.format, "arch": meta.arch}
    for key in ("objective", "objective_opts", "num_classes", "classes", "input", "data", "seed"):
        out[key] = json.loads(header[key]) if key != "objective" else meta.objective
    out.update(metrics=meta.metrics, parameters=values, config=meta.config, extra=meta.extra)
    out.update(lossxfer_version=meta.lossxfer_version, created=meta.created)
    return out


def _store(path: Path) -> dict[str, Any]:
    from lossxfer.store import open_store

    with open_store(path) as store:
        attrs = store.attrs
        splits = {
            split: {
                "rows": store.num_rows(split),
                "layers": {
                    layer: {
                        "width": store.dim(split, layer),
                        "dtype": store.dtype(split, layer),
                        **store.layer_attrs(split, layer),
                    }
                    for layer in store.layers(split)
                },
            }
            for split in store.splits
        }
    return {"format": attrs.pop("format"), "splits": splits, **attrs}


def _result(path: Path) -> dict[str, Any]:
    from lossxfer.results import load_result

    record = load_result(path).to_dict()
    return {
        "format": record["format"],
        "result_kind": record["kind"],
        **{k: record[k] for k in ("model", "dataset", "metrics", "timing", "inputs", "created")},
    }


def rows(description: dict[str, Any], max_text: int = 100) -> list[tuple[str, str]]:
    """(key, text) rows for a table: nested dicts flattened to dotted keys, dicts of plain values
    on one line (`width=64, dtype=float32`), long values cut."""
    out: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and any(isinstance(v, dict) for v in value.values()):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
            return
        if isinstance(value, dict) and value and prefix:  # a leaf record: one line
            text = ", ".join(f"{k}={_text(v)}" for k, v in value.items())
        else:
            text = _text(value)
        out.append((prefix, text if len(text) <= max_text else text[: max_text - 1] + "…"))

    walk("", description)
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
