"""Training state: everything an interrupted run keeps, in one safetensors file.

Weights, momentum buffers, EMA weights, the global RNG state(s) and the position (step, loss
curve, the running loss sum of the current epoch, the global batch the step counts) — enough
for `fit` to continue bit-identically on the CPU. The header holds the configuration identity
that --resume must match (docs/formats.md "Training state").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lossxfer.checkpoint import load_tensors, save_tensors
from lossxfer.errors import InputError
from lossxfer.fsio import require_file
from lossxfer.rundir import check_same

STATE_FORMAT = "lossxfer.train-state/1"


@dataclass
class Position:
    """Where training is: global step, per-epoch mean losses, the running sum of this epoch."""

    step: int = 0
    curve: list[float] = field(default_factory=list)
    epoch_sum: float = 0.0
    batch: int = 0  # the global batch that `step` counts (0: unknown, from an older state)

    def add(self, losses: list[float]) -> None:
        self.epoch_sum += math.fsum(losses)

    def finish_epoch(self, steps: int) -> None:
        self.curve.append(self.epoch_sum / steps)
        self.epoch_sum = 0.0


def save_state(
    path: Path,
    identity: dict[str, Any],
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: dict[str, torch.Tensor] | None,
    pos: Position,
    device: torch.device,
) -> None:
    """Write the state atomically (a kill leaves the previous state, never a partial one)."""
    tensors = {f"model/{k}": v for k, v in network.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema/{k}": v for k, v in ema.items()})
    for name, param in network.named_parameters():
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            tensors[f"momentum/{name}"] = buffer
    tensors["rng/cpu"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    tensors["position/step"] = torch.tensor([pos.step], dtype=torch.int64)
    tensors["position/curve"] = torch.tensor(pos.curve, dtype=torch.float64)
    tensors["position/epoch_sum"] = torch.tensor([pos.epoch_sum], dtype=torch.float64)
    tensors["position/batch"] = torch.tensor([pos.batch], dtype=torch.int64)
    meta = {"format": STATE_FORMAT, "identity": json.dumps(identity, sort_keys=True)}
    save_tensors(path, tensors, meta, force=True)


def load_state(
    path: Path,
    identity: dict[str, Any],
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: dict[str, torch.Tensor] | None,
    pos: Position,
    device: torch.device,
) -> None:
    """Restore a state into `network`, `optimizer`, `ema` (in place) and `pos`.

    A different configuration → exit 2 naming the differing keys; a state that does not fit
    the model → exit 3.
    """
    tensors, header = load_tensors(require_file(path))
    if header.get("format") != STATE_FORMAT:
        raise InputError(f"{path}: not a lossxfer training state file")
    try:
        saved = json.loads(header.get("identity", "{}"))
    except ValueError:
        raise InputError(f"{path}: training state header is malformed") from None
    check_same(path, saved, json.loads(json.dumps(identity)))
    params = dict(network.named_parameters())
    expected = {k: (v.dtype, v.shape) for k, v in network.state_dict().items()}
    expected.update({f"momentum/{k}": (p.dtype, p.shape) for k, p in params.items()})
    for key, value in tensors.items():
        name = key.removeprefix("model/")
        want = expected.get(name if key.startswith("model/") else key)
        if want is not None and (value.dtype, value.shape) != want:
            raise InputError(
                f"{path}: training state tensor {key!r} is {value.dtype} {tuple(value.shape)}, "
                f"the model needs {want[0]} {tuple(want[1])}"
            )
    try:
        network.load_state_dict(_prefixed(tensors, "model/"), strict=True)
        if ema is not None:
            shadow = _prefixed(tensors, "ema/")
            if shadow.keys() != ema.keys():
                raise KeyError("ema")
            for key, value in shadow.items():
                ema[key].copy_(value)
        for name, param in params.items():
            buffer = tensors.get(f"momentum/{name}")
            if buffer is not None:
                optimizer.state[param]["momentum_buffer"] = buffer.to(device)
        torch.set_rng_state(tensors["rng/cpu"])
        if "rng/cuda" in tensors and device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng/cuda"], device)
        pos.step = int(tensors["position/step"][0])
        pos.curve = tensors["position/curve"].tolist()
        pos.epoch_sum = float(tensors["position/epoch_sum"][0])
        pos.batch = int(tensors["position/batch"][0]) if "position/batch" in tensors else 0
    except (KeyError, RuntimeError) as exc:
        raise InputError(f"{path}: training state does not fit this model ({exc})") from None


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
