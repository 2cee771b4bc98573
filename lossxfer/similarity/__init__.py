"""Similarity of representations: centered kernel alignment between layers (docs/method.md §5).

`run_cka` computes a layer × layer matrix; `compute_shard`/`write_shard` and `merge_shards`
split the same computation across jobs; `plot_heatmap` draws a result.
"""

from lossxfer.similarity.run import ESTIMATORS, CkaConfig, run_cka
from lossxfer.similarity.shard import compute_shard, merge_shards, read_shard, write_shard

__all__ = [
    "ESTIMATORS",
    "CkaConfig",
    "compute_shard",
    "merge_shards",
    "read_shard",
    "run_cka",
    "write_shard",
]
