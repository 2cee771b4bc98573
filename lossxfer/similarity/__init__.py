"""Similarity of representations: centered kernel alignment between layers (docs/method.md §5).

On arrays: `cka`, `cka_matrix`, `minibatch_cka` and the streaming `CkaAccumulator`, giving a
`CkaResult`. On activation stores (what `lossxfer cka` runs): `run_cka`, and
`compute_shard`/`write_shard` with `merge_shards` to split it across jobs. Estimators are in the
`ESTIMATORS` registry. Names load lazily, so importing the package stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lossxfer.similarity.api import CkaAccumulator, cka, cka_matrix, minibatch_cka
    from lossxfer.similarity.registry import ESTIMATORS, PRECISIONS, Estimator
    from lossxfer.similarity.result import CkaResult
    from lossxfer.similarity.run import CkaConfig, run_cka
    from lossxfer.similarity.shard import compute_shard, merge_shards, read_shard, write_shard

_WHERE = {
    "CkaAccumulator": "api",
    "cka": "api",
    "cka_matrix": "api",
    "minibatch_cka": "api",
    "ESTIMATORS": "registry",
    "PRECISIONS": "registry",
    "Estimator": "registry",
    "CkaResult": "result",
    "CkaConfig": "run",
    "run_cka": "run",
    "compute_shard": "shard",
    "merge_shards": "shard",
    "read_shard": "shard",
    "write_shard": "shard",
}
__all__ = [
    "ESTIMATORS",
    "PRECISIONS",
    "CkaAccumulator",
    "CkaConfig",
    "CkaResult",
    "Estimator",
    "cka",
    "cka_matrix",
    "compute_shard",
    "merge_shards",
    "minibatch_cka",
    "read_shard",
    "run_cka",
    "write_shard",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'lossxfer.similarity' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lossxfer.similarity.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return __all__
