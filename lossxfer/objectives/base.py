"""The Objective base class: a frozen dataclass of hyperparameters that owns a head and a loss.

Objectives are light (torch is imported inside methods), so the registry can list names for
--help and tab completion without loading torch. Every hyperparameter is a dataclass field and
so an option: `--loss-opt alpha=0.2`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, get_type_hints

from lossxfer.errors import UsageError
from lossxfer.registry import Registry, check_choice

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclasses.dataclass(frozen=True)
class Objective:
    """Base: softmax cross-entropy on a plain linear head (subclasses override what differs)."""

    name: ClassVar[str] = ""
    # Where the objective comes from and where the paper uses it (docs/method.md §1).
    reference: ClassVar[str] = "Kornblith et al. 2021, Table 1"
    # The default learning rate (0.1 × batch/256, when --lr is not given) is multiplied by this:
    # an objective whose gradients are far larger than cross-entropy's at initialisation needs
    # a smaller step to train at default settings (docs/method.md §1, "Learning rate").
    lr_scale: ClassVar[float] = 1.0

    def build_head(self, in_features: int, num_classes: int) -> nn.Linear:
        """The final layer: N(0, 0.01²) weights, zero bias (docs/method.md §2).

        Always an nn.Linear (or subclass), so every checkpoint stores the head as weight, bias.
        """
        from torch import nn

        from lossxfer.objectives.heads import paper_init

        return paper_init(nn.Linear(in_features, num_classes))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, head: nn.Module) -> torch.Tensor:
        """Mean over the batch of the per-example loss; here softmax cross-entropy on z."""
        import torch.nn.functional as F

        return F.cross_entropy(logits, targets)

    def predict_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Scores whose argmax is the prediction (the head's output for every objective here)."""
        return logits

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options().items())
        return f"{self.name}({opts})" if opts else self.name


OBJECTIVES: Registry[type[Objective]] = Registry("loss")


def register(cls: type[Objective]) -> type[Objective]:
    """Class decorator: register an objective under its `name`."""
    return OBJECTIVES.register(cls.name)(cls)


class ObjectiveInfo(NamedTuple):
    """One objective for --help, docs and notebooks: its key, its options with defaults, its
    one-line formula (the class docstring's first line), its default learning-rate scale and
    its reference."""

    name: str
    options: dict[str, Any]
    doc: str
    lr_scale: float = 1.0
    reference: str = ""


def list_objectives() -> list[ObjectiveInfo]:
    """Every registered objective in registry (paper) order; imports no torch."""
    infos = []
    for name in OBJECTIVES.names():
        cls = OBJECTIVES.get(name)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        infos.append(ObjectiveInfo(name, defaults, doc, cls.lr_scale, cls.reference))
    return infos


def make_objective(name: str, opts: Mapping[str, Any] | None = None) -> Objective:
    """Build an objective from its name and option values (strings from the CLI, or typed).

    Unknown keys and unparsable values are usage errors naming the valid keys.
    """
    cls = OBJECTIVES.get(name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, raw in (opts or {}).items():
        if not fields:
            raise UsageError(f"--loss-opt {key}: {name} has no options")
        try:
            check_choice(f"{name} option", key, fields)
        except UsageError as exc:
            raise UsageError(f"--loss-opt {key}: {exc}") from None
        values[key] = _coerce(name, key, raw, hints[key])
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--loss-opt for {name}: {exc}") from None


def parse_loss_opts(items: list[str] | None) -> dict[str, str]:
    """['alpha=0.2', 'variant=released'] → {'alpha': '0.2', 'variant': 'released'}."""
    out: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--loss-opt {item!r}: expected key=value")
        if key.strip() in out:
            raise UsageError(f"--loss-opt {key.strip()}: given twice")
        out[key.strip()] = value.strip()
    return out


def _coerce(loss: str, key: str, raw: Any, hint: Any) -> Any:
    """Convert a CLI string (or JSON value) to the field's declared type."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
    if allowed:
        try:
            return check_choice(f"{loss} {key}", raw, [str(a) for a in allowed])
        except UsageError as exc:
            raise UsageError(f"--loss-opt {key}={raw}: {exc}") from None
    target = hint if isinstance(hint, type) else None
    if isinstance(hint, types.UnionType):
        target = next((t for t in typing.get_args(hint) if t is not type(None)), None)
    try:
        if target is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
            return value
        if target is int:
            return int(raw)
        if target is bool:
            if isinstance(raw, bool):
                return raw
            return {"true": True, "false": False, "1": True, "0": False}[str(raw).lower()]
    except (ValueError, KeyError, TypeError):
        kind = target.__name__ if target else "value"
        raise UsageError(f"--loss-opt {key}={raw}: expected a finite {kind}") from None
    return raw
