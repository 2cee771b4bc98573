"""The nine objectives of REFERENCE.md §1, one registry keyed by name.

Importing this package registers every objective; torch is imported only when a head or loss
is built.
"""

from lossxfer.objectives import softmax  # noqa: F401  (registers its objectives)
from lossxfer.objectives.base import (
    OBJECTIVES,
    Objective,
    make_objective,
    parse_loss_opts,
)

__all__ = ["OBJECTIVES", "Objective", "make_objective", "parse_loss_opts"]
