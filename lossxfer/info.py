"""What a lossxfer file is: the kind is told by content (never by extension), then described.

Checkpoints are safetensors (8-byte header length, then a JSON header), activation stores are
HDF5 (8-byte signature), result records are JSON. Anything else, or a file of the right
container but without lossxfer metadata, is an InputError naming the file.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from lossxfer.errors import InputError
from lossxfer.fsio import require_file

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def sniff(path: str | os.PathLike[str]) -> str:
    """'checkpoint' (safetensors), 'store' (HDF5) or 'result' (JSON), from the first bytes."""
    p = require_file(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if head[:8] == HDF5_SIGNATURE:
        return "store"
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1:
        return "checkpoint"
    if head.lstrip()[:1] in (b"{", b"["):
        return "result"
    raise InputError(
        f"{p}: not a lossxfer file (neither a safetensors checkpoint, an HDF5 activation store "
        "nor a JSON result record)"
    )


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """`{"path", "kind", "format", ...}`: the file's metadata, validated as its reader would."""
    kind = sniff(path)
    body = {"checkpoint": _checkpoint, "store": _store, "result": _result}[kind](Path(path))
    return {"path": str(path), "kind": kind, **body}


def _checkpoint(path: Path) -> dict[str, Any]:
    from lossxfer.checkpoint import verify_checkpoint

    meta, values = verify_checkpoint(path)
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
