"""Stored layers that are the same activations under two names.

A network whose penultimate features are its global-average-pooled last block (smallcnn's
`block3`, a ResNet's last block; `penultimate` is `pool(last block)`, and `extract --pool avg`
pools every block the same way) stores one activation twice. Tables and figures show it once.
"""

from __future__ import annotations

from collections.abc import Sequence


def identical_layers(
    layers_a: Sequence[object], layers_b: Sequence[object], matrix: Sequence[Sequence[object]]
) -> dict[str, str]:
    """{earlier: later} for the layers a CKA matrix shows to be the same activations.

    Two layers are the same in both networks exactly when their rows and their columns of the
    matrix are equal: CKA with identical features is computed identically, so the equality is
    exact, and two different layers are never equal in every entry."""
    both = [(i, list(layers_b).index(name)) for i, name in enumerate(layers_a) if name in layers_b]
    same: dict[str, str] = {}
    for n, (i, j) in enumerate(both):
        for k, m in both[n + 1 :]:
            if str(layers_a[i]) in same:
                break
            row = list(matrix[i])
            equal = row == list(matrix[k]) and all(r[j] == r[m] for r in matrix)
            if equal and any(v is not None for v in row):
                same[str(layers_a[i])] = str(layers_a[k])
    return same
