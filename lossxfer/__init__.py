"""lossxfer: how the training objective shapes representations and their transferability.

The public API (docs/api.md) is exported lazily (PEP 562): `import lossxfer` imports nothing
heavy, and each name imports its module (numpy, torch, ...) when it is first used. `_EXPORTS`
is the one table of public names; the `TYPE_CHECKING` imports below repeat it for mypy and
IDEs, and a test keeps the two equal.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors (each maps to a CLI exit code)
    "LossxferError": "lossxfer.errors",
    "UsageError": "lossxfer.errors",
    "InputError": "lossxfer.errors",
    "DeviceError": "lossxfer.errors",
    "DivergedError": "lossxfer.errors",
    # result records
    "Record": "lossxfer.results",
    "Result": "lossxfer.results",
    "load_result": "lossxfer.results",
    # objectives and architectures
    "create_objective": "lossxfer.objectives.module",
    "list_objectives": "lossxfer.objectives.base",
    "list_architectures": "lossxfer.models",
    # models from elsewhere (torchvision, timm) as lossxfer checkpoints
    "import_model": "lossxfer.importer",
    # activations of any torch module
    "extract_features": "lossxfer.activations",
    "Activations": "lossxfer.activations",
    # class separation (docs/method.md §6)
    "class_separation": "lossxfer.separation",
    "Separation": "lossxfer.separation",
    "SeparationAccumulator": "lossxfer.separation",
    "SeparationConfig": "lossxfer.separation",
    "run_separation": "lossxfer.separation",
    # CKA (docs/method.md §5)
    "cka": "lossxfer.similarity.api",
    "cka_matrix": "lossxfer.similarity.api",
    "minibatch_cka": "lossxfer.similarity.api",
    "CkaAccumulator": "lossxfer.similarity.api",
    "CkaResult": "lossxfer.similarity.result",
    # probes (docs/method.md §4)
    "linear_probe": "lossxfer.probe.arrays",
    "ridge_probe": "lossxfer.probe.arrays",
    "knn_probe": "lossxfer.probe.arrays",
    "probe_features": "lossxfer.probe.arrays",
    "ProbeFit": "lossxfer.probe.methods",
    "ProbeOptions": "lossxfer.probe.methods",
    "ProbeConfig": "lossxfer.probe.run",
    "run_probe": "lossxfer.probe.run",
    # superclasses (coarse-to-fine transfer)
    "LabelMap": "lossxfer.labelmap",
    "parse_label_map": "lossxfer.labelmap",
    # paper tables and figures from result records (`lossxfer report`)
    "run_report": "lossxfer.report.build",
    "Report": "lossxfer.report.build",
    "ReportConfig": "lossxfer.report.config",
}

__all__ = ["__version__", *_EXPORTS]  # noqa: PLE0604  (the table is the one list)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lossxfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    # `import X as X`: re-exported for type checkers, one line per name so merges stay clean
    from lossxfer.activations import Activations as Activations
    from lossxfer.activations import extract_features as extract_features
    from lossxfer.errors import DeviceError as DeviceError
    from lossxfer.errors import DivergedError as DivergedError
    from lossxfer.errors import InputError as InputError
    from lossxfer.errors import LossxferError as LossxferError
    from lossxfer.errors import UsageError as UsageError
    from lossxfer.importer import import_model as import_model
    from lossxfer.labelmap import LabelMap as LabelMap
    from lossxfer.labelmap import parse_label_map as parse_label_map
    from lossxfer.models import list_architectures as list_architectures
    from lossxfer.objectives.base import list_objectives as list_objectives
    from lossxfer.objectives.module import create_objective as create_objective
    from lossxfer.probe.arrays import knn_probe as knn_probe
    from lossxfer.probe.arrays import linear_probe as linear_probe
    from lossxfer.probe.arrays import probe_features as probe_features
    from lossxfer.probe.arrays import ridge_probe as ridge_probe
    from lossxfer.probe.methods import ProbeFit as ProbeFit
    from lossxfer.probe.methods import ProbeOptions as ProbeOptions
    from lossxfer.probe.run import ProbeConfig as ProbeConfig
    from lossxfer.probe.run import run_probe as run_probe
    from lossxfer.report.build import Report as Report
    from lossxfer.report.build import run_report as run_report
    from lossxfer.report.config import ReportConfig as ReportConfig
    from lossxfer.results import Record as Record
    from lossxfer.results import Result as Result
    from lossxfer.results import load_result as load_result
    from lossxfer.separation import Separation as Separation
    from lossxfer.separation import SeparationAccumulator as SeparationAccumulator
    from lossxfer.separation import SeparationConfig as SeparationConfig
    from lossxfer.separation import class_separation as class_separation
    from lossxfer.separation import run_separation as run_separation
    from lossxfer.similarity.api import CkaAccumulator as CkaAccumulator
    from lossxfer.similarity.api import cka as cka
    from lossxfer.similarity.api import cka_matrix as cka_matrix
    from lossxfer.similarity.api import minibatch_cka as minibatch_cka
    from lossxfer.similarity.result import CkaResult as CkaResult
