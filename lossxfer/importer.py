"""`lossxfer import`: weights of a torchvision or timm model → an ordinary lossxfer checkpoint.

The architecture side (names, building, named layers, input contract) is lossxfer/zoo.py; this
module reads and checks the weights — safetensors only, never unpickled, strictly matched — and
writes the checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossxfer.errors import InputError, UsageError
from lossxfer.registry import check_choice
from lossxfer.zoo import (
    classifier_path,
    create_model,
    input_contract,
    override_contract,
    parse_arch,
    require_timm,
    split_network,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lossxfer.results import Result

PICKLED = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".tar")


def read_weights(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """(tensors, config.json or {}, the safetensors file) of a file or Hugging Face folder."""
    from lossxfer.checkpoint import load_tensors
    from lossxfer.fsio import require_file
    from lossxfer.sniff import KINDS, PICKLE_ADVICE, sniff

    p = Path(path).expanduser()
    config: dict[str, Any] = {}
    if p.is_dir():
        folder, p = p, p / "model.safetensors"
        if not p.is_file():
            raise InputError(f"{folder}: no model.safetensors inside (a Hugging Face model folder "
                             "holds model.safetensors and config.json)")  # fmt: skip
        if (folder / "config.json").is_file():
            try:
                config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"{folder / 'config.json'}: not readable JSON ({exc})") from None
            if not isinstance(config, dict):
                raise InputError(f"{folder / 'config.json'}: not a JSON object")
    require_file(p)
    if p.suffix.lower() in PICKLED or sniff(p) == "pickle":
        advice = PICKLE_ADVICE.replace("PATH", repr(str(p)))
        raise InputError(f"{p}: {KINDS['pickle'][0]}; {advice}")
    tensors, _ = load_tensors(p)
    if tensors and all(k.startswith("module.") for k in tensors):  # saved from DataParallel
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors, config, p


def check_weights(
    path: Path, arch: str, model: nn.Module, tensors: dict[str, torch.Tensor]
) -> None:
    """Strict: the same tensor names and shapes as the architecture, finite values; else exit 3
    naming the first missing and the first unexpected key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        parts = [
            f"{what} {keys[0]!r}" + (f" (+{len(keys) - 1} more)" if len(keys) > 1 else "")
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise InputError(f"{path}: the weights do not match {arch}: {'; '.join(parts)}")
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise InputError(f"{path}: tensor {key!r} has shape {tuple(value.shape)}, {arch} "
                             f"needs {tuple(expected[key].shape)}")  # fmt: skip
        if value.is_floating_point() and not bool(value.isfinite().all()):
            raise InputError(f"{path}: tensor {key!r} holds NaN or infinity")


def import_model(
    model: str,
    weights: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    objective: str = "unknown",
    classes: Sequence[int] | None = None,
    trained_on: str = "unknown",
    size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str | None = None,
    crop: float | None = None,
    download: bool = False,
    force: bool = False,
) -> Result:
    """Turn a torchvision or timm model into a lossxfer checkpoint at `out`; the `import` record.

    `weights`: a safetensors file or a Hugging Face model folder; `download=True` instead takes
    the published weights (the only use of the network). The class count is the classifier's
    row count in the weights; `classes` names their source class ids (default 0…K−1).
    """
    from lossxfer.checkpoint import CheckpointMeta, save_checkpoint
    from lossxfer.fsio import check_output, sha256
    from lossxfer.nets import Network
    from lossxfer.objectives import OBJECTIVES
    from lossxfer.results import Result, input_record

    started = time.perf_counter()
    check_output(out, force)
    source, name = parse_arch(model)
    if source == "timm":
        require_timm()  # exit 4 before any work when timm is missing
    arch = f"{source}:{name}"
    check_choice("objective", objective, ["unknown", *OBJECTIVES.names()])
    if (weights is None) != download:
        raise UsageError("give either --weights FILE.safetensors (or a Hugging Face model folder) "
                         "or --download (the published weights)")  # fmt: skip
    tensors, config, path = read_weights(weights) if weights is not None else ({}, {}, None)
    if source == "timm" and config.get("architecture") not in (None, name.split(".")[0]):
        raise InputError(f"{path}: config.json describes {config['architecture']!r}, not {name!r}")
    net = create_model(source, name, pretrained=download)
    if path is not None:
        _fit_classifier(net, tensors)
        check_weights(path, arch, net, tensors)
        net.load_state_dict(tensors, strict=True)
    contract = override_contract(
        input_contract(source, name, net, config), size=size, mean=mean, std=std,
        interpolation=interpolation, crop=crop,
    )  # fmt: skip
    backbone, head = split_network(net)
    network = Network(backbone, head).eval()
    ids = list(classes) if classes is not None else list(range(head.out_features))
    if len(ids) != head.out_features or len(set(ids)) != len(ids):
        raise UsageError(f"--classes: {len(ids)} distinct ids needed for the "
                         f"{head.out_features} outputs of the classifier")  # fmt: skip
    weights_record = input_record(path) if path is not None else None
    meta = CheckpointMeta(
        arch=arch, objective=objective, objective_opts={}, num_classes=len(ids), classes=ids,
        input=contract, data={"spec": trained_on, "label": trained_on, "classes": ids}, seed=0,
        config={"source": source, "name": name, "download": download},
        extra={"import": {"source": source, "name": name, "weights": weights_record,
                          "layers": network.layer_names()}},
    )  # fmt: skip
    save_checkpoint(out, network, meta, force)
    return Result(
        kind="import",
        metrics={
            "num_classes": len(ids),
            "layers": network.layer_names(),
            "parameters": sum(p.numel() for p in network.parameters()),
            "input": contract.to_dict(),
        },
        config={
            "model": arch,
            "weights": str(path) if path else None,
            "out": str(out),
            "objective": objective,
            "trained_on": trained_on,
            "download": download,
        },
        inputs=[weights_record] if weights_record else [],
        model=meta.provenance(sha256(out)),
        timing={"wall_s": time.perf_counter() - started},
    )


def _fit_classifier(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Give the classifier the row count of the weights' classifier (their class count)."""
    from torch import nn

    path = classifier_path(model)
    head = model.get_submodule(path)
    found = tensors.get(f"{path}.weight")
    if isinstance(head, nn.Linear) and found is not None and found.ndim == 2:
        rows = int(found.shape[0])
        if rows != head.out_features:
            model.set_submodule(path, nn.Linear(head.in_features, rows))
