"""What a file is, from its first bytes, without torch, numpy or h5py (instant).

Verbs call `expect` on their inputs before any heavy import, so a wrong file costs a fraction of
a second and the message says what the file is and which verb reads it. A safetensors file is
an 8-byte little-endian header length followed by that many bytes of JSON (the tensor table and
a string → string `__metadata__`), so its metadata is read here without the safetensors library.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

from lossxfer.errors import InputError
from lossxfer.formats import CHECKPOINT
from lossxfer.fsio import require_file

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"  # torch.save's default container (pickle inside a zip)
MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header

# kind → (what it is, the verbs that read it)
KINDS = {
    "checkpoint": ("a lossxfer checkpoint", "extract, finetune, info"),
    "state": ("resumable training state", "train --resume"),
    "safetensors": ("a safetensors file without lossxfer metadata", ""),
    "store": ("an HDF5 activation store", "probe, separation, cka, info"),
    "result": ("a JSON result record", "report, info"),
    "pickle": ("a pickled PyTorch file (.pth/.bin/.ckpt), which lossxfer never loads", ""),
    "run": ("a run directory", "report"),
}
PICKLE_ADVICE = (
    "convert it once, where you trust the file: "
    "safetensors.torch.save_file(torch.load(PATH), 'model.safetensors')"
)


def safetensors_header(path: str | os.PathLike[str], whole: bool = True) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor table and `__metadata__`).

    `whole`: also check that every tensor's bytes lie inside the file (not truncated)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 2 <= length <= min(MAX_HEADER, size - 8):
                raise InputError(f"{p}: not a safetensors file ({describe_kind(p)})")
            header = json.loads(fh.read(length))
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{p}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise InputError(f"{p}: not a safetensors file (its header is not a JSON object)")
    data = size - 8 - length
    for key, entry in header.items() if whole else ():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]):
            raise InputError(f"{p}: safetensors entry {key!r} is malformed")
        if offsets[1] > data:
            raise InputError(
                f"{p}: not a readable safetensors file (truncated: {key!r} ends past its end)"
            )
    return header


def sniff(path: str | os.PathLike[str]) -> str:
    """One of KINDS' keys, or 'unknown'; a missing path is an InputError."""
    p = Path(path)
    if p.is_dir():
        return "run"
    require_file(p)
    try:
        with open(p, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if head[:8] == HDF5_SIGNATURE:
        return "store"
    if head[:4] == ZIP_SIGNATURE:  # torch.save's zip container
        return "pickle"
    # Safetensors before a bare pickle: a header length whose low byte is 0x80 (1 in 256)
    # starts with the pickle protocol marker, but a pickle has no JSON at byte 8.
    if len(head) > 8 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1:
        try:
            fmt = str(safetensors_header(p, whole=False).get("__metadata__", {}).get("format", ""))
        except (InputError, AttributeError):
            return "unknown"
        if fmt.startswith("lossxfer.") and "-state/" in fmt:  # lossxfer.train-state/1
            return "state"
        return "checkpoint" if fmt == CHECKPOINT else "safetensors"
    if head[:1] == b"\x80":  # pickle protocol ≥ 2
        return "pickle"
    if head.lstrip()[:1] in (b"{", b"["):
        return "result"
    return "unknown"


def describe_kind(path: Path) -> str:
    """'an HDF5 activation store (read by probe, separation, cka, info)' or similar."""
    try:
        kind = sniff(path)
    except InputError:
        return "not a readable file"
    if kind not in KINDS:
        return "not a lossxfer file"
    what, verbs = KINDS[kind]
    if kind == "pickle":
        return f"{what}; {PICKLE_ADVICE}"
    return what + (f" (read by {verbs})" if verbs else "")


def expect(path: str | os.PathLike[str], *kinds: str) -> str:
    """The kind of `path` if it is one of `kinds`, else an InputError (exit 3) saying what it is.

    A run directory given where a checkpoint is expected names the checkpoint inside it."""
    p = Path(path)
    kind = sniff(p)
    if kind in kinds:
        return kind
    if kind == "safetensors" and "checkpoint" in kinds:
        return "checkpoint"  # its reader says which metadata is missing
    if kind == "run" and "checkpoint" in kinds:
        model = p / "model.safetensors"
        hint = f"; did you mean {model}?" if model.is_file() else " (no model.safetensors inside)"
        raise InputError(f"{p}: a run directory, not a checkpoint{hint}")
    wanted = [KINDS[k][0] for k in kinds]
    expected = ", ".join(wanted[:-1]) + (" or " if len(wanted) > 1 else "") + wanted[-1]
    if kind not in KINDS:
        raise InputError(f"{p}: not a lossxfer file (expected {expected})")
    if kind == "pickle":  # say what to do about it last
        raise InputError(f"{p}: is {KINDS[kind][0]}, not {expected}; {PICKLE_ADVICE}")
    raise InputError(f"{p}: is {describe_kind(p)}, not {expected}")


def checkpoint_layers(path: str | os.PathLike[str]) -> list[str]:
    """Layer names of a lossxfer checkpoint, from its tensor names (`backbone.blocks.<i>.…`),
    or for an imported model from the list `lossxfer import` recorded."""
    header = safetensors_header(path)
    try:
        extra = json.loads(header.get("__metadata__", {}).get("extra", "{}"))
        return [str(n) for n in extra["import"]["layers"]]
    except (AttributeError, KeyError, TypeError, ValueError):
        pass
    blocks = {int(m[1]) for k in header if (m := re.match(r"backbone\.blocks\.(\d+)\.", k))}
    return ["stem", *(f"block{i + 1}" for i in sorted(blocks)), "penultimate", "logits"]
