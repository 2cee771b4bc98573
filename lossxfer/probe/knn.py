"""kNN probe (docs/method.md §4): cosine similarity, k and the vote chosen on validation.

Rows are L2-normalised, so similarity is a matrix product. Queries are taken in blocks small
enough that one block's similarities to the whole reference set fit in `budget` elements, and
only each query's `max(K_GRID)` nearest references are kept: memory stays bounded at any size
(100k × 100k included). Two votes: temperature-weighted (each neighbour adds exp(sim/T),
T = 0.07, as in Wu et al. 2018 and DINO) and plain majority. Ties between classes go to the
lowest label.
"""

from __future__ import annotations

from typing import Any

import torch

from lossxfer.probe.common import Features, accuracies, first_best, one_thread_if_small
from lossxfer.progress import ProgressFn, no_progress

K_GRID = (200, 100, 50, 20, 10, 5, 1)  # preference order on ties: smoother (larger k) first
TEMPERATURE = 0.07
VOTES = ("weighted", "majority")
BUDGET = 1 << 24  # similarity elements per query block (64 MiB in float32)
TIE_RULE = (
    "highest validation top-1; ties go to the weighted vote, then to the larger k; "
    "tied class votes go to the lowest label"
)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.double(), dim=1).float()


def knn_predict(
    reference: Features,
    queries: torch.Tensor,
    candidates: list[tuple[str, int]],
    budget: int = BUDGET,
) -> dict[tuple[str, int], torch.Tensor]:
    """Predicted labels of `queries` for each (vote, k) candidate, from one neighbour search."""
    classes, ref_idx = torch.unique(reference.y, return_inverse=True)
    ref = _unit(reference.x)
    kmax = min(len(ref), max(k for _, k in candidates))
    step = max(1, budget // len(ref))
    out: dict[tuple[str, int], list[torch.Tensor]] = {c: [] for c in candidates}
    for lo in range(0, len(queries), step):
        sims, nearest = torch.topk(_unit(queries[lo : lo + step]) @ ref.T, kmax, dim=1)
        labels = ref_idx[nearest]
        weights = {"weighted": (sims / TEMPERATURE).exp(), "majority": torch.ones_like(sims)}
        for vote, k in candidates:
            tally = torch.zeros(len(sims), len(classes), dtype=sims.dtype, device=sims.device)
            tally.scatter_add_(1, labels[:, :k], weights[vote][:, :k])
            out[(vote, k)].append(classes[tally.argmax(1)])
    return {c: torch.cat(parts) for c, parts in out.items()}


def knn_sweep(
    fit: Features,
    val: Features,
    refit: Features,
    test: Features,
    progress: ProgressFn = no_progress,
    label: str = "knn",
) -> dict[str, Any]:
    """Choose (vote, k) on fit → val; classify test against refit (train + val)."""
    with one_thread_if_small(refit):
        progress(label, 0, 2)
        candidates = [(v, k) for v in VOTES for k in K_GRID if k <= len(fit)]
        predictions = knn_predict(fit, val.x, candidates)
        scores = [accuracies(predictions[c], val.y)[0] for c in candidates]
        curve = [
            {"value": k, "vote": v, "val_top1": s}
            for (v, k), s in zip(candidates, scores, strict=True)
        ]
        progress(label, 1, 2)
        chosen = first_best(scores)
        vote, k = candidates[chosen]
        pred = knn_predict(refit, test.x, [(vote, k)])[(vote, k)]
        test_top1, test_mpc = accuracies(pred, test.y)
        progress(label, 2, 2)
    return {
        "test_top1": test_top1,
        "test_mean_per_class": test_mpc,
        "val_top1": scores[chosen],
        "chosen": k,
        "vote": vote,
        "temperature": TEMPERATURE,
        "similarity": "cosine",
        "val_curve": curve,
        "tie_rule": TIE_RULE,
    }
