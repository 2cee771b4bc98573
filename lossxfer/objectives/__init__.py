"""The nine objectives of docs/method.md §1, one registry keyed by name.

Importing this package registers every objective; torch is imported only when a head or loss
is built. The registry lists them in the paper's order, which is the import order below.
"""

# isort: off
from lossxfer.objectives import softmax  # noqa: F401  softmax, label_smoothing
from lossxfer.objectives import sigmoid  # noqa: F401  sigmoid
from lossxfer.objectives import regularized  # noqa: F401  extra_final_layer_l2, dropout, logit_penalty
from lossxfer.objectives import normalized  # noqa: F401  logit_normalization, cosine_softmax
from lossxfer.objectives import squared_error  # noqa: F401  squared_error

# isort: on
from lossxfer.objectives.base import (
    OBJECTIVES,
    Objective,
    ObjectiveInfo,
    list_objectives,
    make_objective,
    parse_loss_opts,
)

__all__ = [
    "OBJECTIVES",
    "Objective",
    "ObjectiveInfo",
    "list_objectives",
    "make_objective",
    "parse_loss_opts",
]
