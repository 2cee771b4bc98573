"""Class lists as the command line writes them: '0-4,7' ↔ [0, 1, 2, 3, 4, 7]."""

from __future__ import annotations

import re
from collections.abc import Sequence

from lossxfer.errors import UsageError


def parse_classes(text: str | None) -> list[int] | None:
    """'0-4,7' → [0, 1, 2, 3, 4, 7]; None → None (all classes).

    An empty text is an error, not "all classes": `--classes "$SUBSET"` with an unset variable
    must not quietly train on every class."""
    if text is None:
        return None
    if not text.strip():
        raise UsageError(
            f"--classes {text!r}: no class given (an unset shell variable?); omit --classes "
            "for all classes"
        )
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UsageError(f"--classes {text!r}: expected ids and ranges like 0-4,7")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UsageError(f"--classes {text!r}: range {part} is empty ({hi} < {lo})")
        ids.extend(range(lo, hi + 1))
    if len(set(ids)) != len(ids):
        raise UsageError(f"--classes {text!r}: a class is listed twice")
    return sorted(ids)


def format_classes(ids: Sequence[int]) -> str:
    """[0, 1, 2, 3, 4, 7] → '0-4,7' (the inverse of parse_classes)."""
    parts: list[str] = []
    ids = sorted(ids)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)
