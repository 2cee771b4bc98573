"""Checkpoints: safetensors weights plus self-describing metadata (docs/formats.md).

A checkpoint alone rebuilds its model: the metadata names the architecture, the objective and
its options (which build the head), the class count and the input spec. Loading is strict (a
missing or unexpected tensor is an error) and never executes code: safetensors holds only raw
tensors and a string → string header.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossxfer import __version__
from lossxfer.errors import InputError, LossxferError
from lossxfer.formats import CHECKPOINT, check_format
from lossxfer.fsio import atomic_path, require_file, sha256
from lossxfer.inputs import InputSpec
from lossxfer.results import dumps, now

if TYPE_CHECKING:
    import torch

    from lossxfer.nets import Network

# Metadata values that are JSON documents (the rest are plain strings).
_JSON_FIELDS = (
    "objective_opts",
    "classes",
    "input",
    "data",
    "training",
    "config",
    "metrics",
    "extra",
)


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
    """Everything besides the weights; stored as the safetensors `__metadata__` header."""

    arch: str
    objective: str
    objective_opts: dict[str, Any]
    num_classes: int
    classes: list[int]  # source class ids, in the order of the model's outputs
    input: InputSpec
    data: dict[str, Any]  # Data.describe() of the training data
    seed: int
    # The resolved optimisation that makes runs comparable (lr actually used, epochs, global
    # batch, weight decay, …; loop.FitResult.training); {} in checkpoints that predate it.
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. finetune's source
    lossxfer_version: str = __version__
    created: str = dataclasses.field(default_factory=now)
    format: str = CHECKPOINT

    def to_header(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "input":
                value = value.to_dict()
            out[f.name] = dumps(value, indent=None) if f.name in _JSON_FIELDS else str(value)
        return out

    @classmethod
    def from_header(cls, header: dict[str, str] | None, source: object) -> CheckpointMeta:
        header = header or {}
        check_format(header.get("format"), CHECKPOINT, source)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in header:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise InputError(f"{source}: checkpoint metadata lacks {f.name!r}")
                continue
            raw = header[f.name]
            try:
                if f.name in _JSON_FIELDS:
                    values[f.name] = json.loads(raw)
                elif f.name in ("num_classes", "seed"):
                    values[f.name] = int(raw)
                elif isinstance(raw, str):
                    values[f.name] = raw
                else:  # safetensors metadata is string → string; a hand-made header may not be
                    raise TypeError(f.name)
                if f.name == "input":
                    values[f.name] = InputSpec.from_dict(values[f.name])
            except (json.JSONDecodeError, ValueError, KeyError, TypeError):
                raise InputError(f"{source}: checkpoint metadata {f.name!r} is malformed") from None
        meta = cls(**values)
        expect = {
            "objective_opts": dict,
            "classes": list,
            "data": dict,
            "training": dict,
            "config": dict,
            "metrics": dict,
            "extra": dict,
        }
        for name, typ in expect.items():
            if not isinstance(getattr(meta, name), typ):
                raise InputError(f"{source}: checkpoint metadata {name!r} must be a JSON {typ}")
        if meta.num_classes != _label_count(meta, source) or meta.num_classes < 1:
            raise InputError(f"{source}: num_classes disagrees with the class list")
        _check_finished(meta, source)
        return meta

    @property
    def imported(self) -> bool:
        """Made by `lossxfer import`: the head is the model's own linear classifier and the
        objective only a label (possibly `unknown`), never used to build anything."""
        return "import" in self.extra

    def provenance(self, sha: str) -> dict[str, Any]:
        """The `model` block of result records (docs/internals.md)."""
        return {
            "arch": self.arch,
            "objective": self.objective,
            "objective_opts": self.objective_opts,
            "seed": self.seed,
            "data": self.data,
            "training": self.training,
            "checkpoint_sha256": sha,
        }


def _check_finished(meta: CheckpointMeta, source: object) -> None:
    """Refuse a model saved before its run ended (0.1 wrote one after every epoch).

    Since 0.2 a model file is only written at the end of a run; older checkpoints are told by
    their record of what was done (`metrics.steps`/`epochs`) falling short of what was asked
    (`config.optim.steps`/`epochs`)."""
    optim = meta.config.get("optim")
    if not isinstance(optim, dict):
        return  # imported models, hand-made checkpoints: nothing was planned here
    for unit in ("steps", "epochs"):
        planned, done = optim.get(unit), meta.metrics.get(unit)
        if isinstance(planned, int) and isinstance(done, int):
            if done < planned:
                raise InputError(
                    f"{source}: an unfinished run ({done} of {planned} {unit}); rerun its train "
                    "command with --resume to finish it"
                )
            return


def _label_count(meta: CheckpointMeta, source: object) -> int:
    """How many outputs the metadata implies: its classes, or its label map's superclasses."""
    text = meta.data.get("label_map")
    if not text:
        return len(meta.classes)
    from lossxfer.labelmap import parse_inline

    try:
        mapping = parse_inline(str(text))
    except LossxferError:
        raise InputError(f"{source}: checkpoint metadata 'data.label_map' is malformed") from None
    if mapping.classes != sorted(meta.classes):
        raise InputError(f"{source}: the label map disagrees with the class list")
    return len(mapping.groups)


def save_tensors(
    path: str | os.PathLike[str],
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
    force: bool = False,
) -> Path:
    """Write a safetensors file atomically (temporary file, fsync, rename)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path, force) as tmp:
        try:
            save_file(flat, str(tmp), metadata=metadata)
        except Exception as exc:  # SafetensorError wraps the OS error (e.g. a full disk)
            found = re.search(r"os error (\d+)", str(exc))
            if found is None:
                raise
            code = int(found.group(1))
            raise OSError(code, os.strerror(code)) from None
    return Path(path)


def load_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor and the header of a safetensors file; any corruption → exit 3."""
    from safetensors import safe_open

    p = require_file(path)
    try:
        with safe_open(str(p), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise InputError(f"{p}: not a readable safetensors file ({_first_line(exc)})") from None
    return tensors, header


def read_metadata(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Only the header: cheap, for `info` and for validating inputs before work starts."""
    from safetensors import safe_open

    p = require_file(path)
    try:
        with safe_open(str(p), framework="pt", device="cpu") as fh:
            header = fh.metadata()
    except Exception as exc:
        raise InputError(f"{p}: not a readable safetensors file ({_first_line(exc)})") from None
    return CheckpointMeta.from_header(header, p)


def save_checkpoint(
    path: str | os.PathLike[str], network: Network, meta: CheckpointMeta, force: bool = False
) -> Path:
    return save_tensors(path, dict(network.state_dict()), meta.to_header(), force)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[Network, CheckpointMeta]:
    """Rebuild the network from the file alone and load its weights strictly (on the CPU)."""
    tensors, header = load_tensors(path)
    meta = CheckpointMeta.from_header(header, path)
    network = _rebuild(path, meta)
    found = {k: (_dtype_name(v.dtype), tuple(v.shape)) for k, v in tensors.items()}
    _check_tensors(path, meta.arch, _expected_tensors(network), found)
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(value.isfinite().all()):
            raise InputError(f"{path}: tensor {key!r} holds NaN or infinity; refusing the weights")
    network.load_state_dict(tensors, strict=True)
    return network, meta


def verify_checkpoint(path: str | os.PathLike[str]) -> tuple[CheckpointMeta, int]:
    """Check header and tensor list against the rebuilt model without loading any weights.

    Returns the metadata and the number of stored values; the model is built on torch's
    `meta` device, so this is cheap even for ResNet-50 (for `info`, and before long work).
    """
    import torch
    from safetensors import safe_open

    p = require_file(path)
    try:
        with safe_open(str(p), framework="pt", device="cpu") as fh:
            header = fh.metadata()
            found: dict[str, _TensorInfo] = {}
            for key in fh.keys():  # noqa: SIM118
                piece = fh.get_slice(key)
                code = piece.get_dtype()
                found[key] = (_DTYPES.get(code, code), tuple(piece.get_shape()))
    except Exception as exc:
        raise InputError(f"{p}: not a readable safetensors file ({_first_line(exc)})") from None
    meta = CheckpointMeta.from_header(header, p)
    with torch.device("meta"):
        network = _rebuild(p, meta)
    _check_tensors(p, meta.arch, _expected_tensors(network), found)
    return meta, sum(math.prod(shape) for _, shape in found.values())


_TensorInfo = tuple[str, tuple[int, ...]]  # dtype name, shape
# safetensors dtype codes of the tensors a network's state dict holds
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
           "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
           "BOOL": "bool"}  # fmt: skip


def _rebuild(path: str | os.PathLike[str], meta: CheckpointMeta) -> Network:
    from lossxfer.models import build_network
    from lossxfer.objectives import make_objective

    try:
        objective = None if meta.imported else make_objective(meta.objective, meta.objective_opts)
        return build_network(meta.arch, meta.input, objective, meta.num_classes)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot rebuild the model: {_first_line(exc)}") from None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _expected_tensors(network: Network) -> dict[str, _TensorInfo]:
    return {k: (_dtype_name(v.dtype), tuple(v.shape)) for k, v in network.state_dict().items()}


def _check_tensors(
    path: str | os.PathLike[str],
    arch: str,
    expected: dict[str, _TensorInfo],
    found: dict[str, _TensorInfo],
) -> None:
    """Strict match of tensor names, dtypes and shapes; the first difference → exit 3."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise InputError(f"{path}: checkpoint tensors do not match {arch}: {what}")
    for key, (dtype, shape) in found.items():
        if (dtype, shape) != expected[key]:
            need_dtype, need_shape = expected[key]
            raise InputError(
                f"{path}: tensor {key!r} is {dtype} {shape}, the model needs {need_dtype} "
                f"{need_shape}"
            )


def checkpoint_provenance(path: str | os.PathLike[str], meta: CheckpointMeta) -> dict[str, Any]:
    return meta.provenance(sha256(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
