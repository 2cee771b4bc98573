"""Label maps: train or evaluate on superclasses (coarse-to-fine transfer, docs/evidence.md).

A label map groups source classes into superclasses, as CIFAR-100's 20 superclasses or the
BREEDS benchmarks do. It is given inline, `0,6:0;1,7:1;…` (classes, colon, superclass; groups
separated by `;`; class ranges like `0-1` allowed), or as a file: JSON `{"0": 0, "6": 0, …}` or
CSV rows `class,superclass`. Superclasses are either the integers 0…G−1 (each used) or names
(ids in order of first appearance). Everything here is stdlib: the CLI validates while parsing.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossxfer.errors import InputError, UsageError


@dataclass(frozen=True)
class LabelMap:
    """Superclass i is the source classes `groups[i]`; `names[i]` is its name, if named."""

    groups: tuple[tuple[int, ...], ...]
    names: tuple[str, ...] | None = None

    @property
    def classes(self) -> list[int]:
        """Every mapped source class, sorted."""
        return sorted(c for group in self.groups for c in group)

    def lookup(self, num_source_classes: int) -> list[int]:
        """superclass id of each source class id (−1 for unmapped ones)."""
        table = [-1] * num_source_classes
        for superclass, group in enumerate(self.groups):
            for c in group:
                table[c] = superclass
        return table

    def check(self, chosen: list[int], available: int, spec: object) -> None:
        """Every chosen class mapped, nothing mapped that the data lacks or was not chosen."""
        missing = sorted(set(self.classes) - set(range(available)))
        if missing:
            raise UsageError(
                f"--label-map: {spec} has classes 0-{available - 1}; no class {missing[0]}"
            )
        unmapped = sorted(set(chosen) - set(self.classes))
        if unmapped:
            raise UsageError(f"--label-map: class {unmapped[0]} of {spec} is not mapped")
        extra = sorted(set(self.classes) - set(chosen))
        if extra:
            raise UsageError(f"--label-map: class {extra[0]} is mapped but not in --classes")

    def __str__(self) -> str:
        """The canonical inline form, which `parse` reads back to an equal map."""
        from lossxfer.classes import format_classes

        targets = self.names or [str(i) for i in range(len(self.groups))]
        return ";".join(
            f"{format_classes(g)}:{t}" for g, t in zip(self.groups, targets, strict=True)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [list(g) for g in self.groups], "names": self.names}


def parse_label_map(text: str) -> LabelMap:
    """An inline map or a JSON/CSV file's; malformed, duplicate or empty group → UsageError."""
    path = Path(text).expanduser()
    inline = ":" in text and not path.is_file()
    return _build(_parse_inline(text) if inline else _read_file(path, text), text)


def canonical(text: str | None) -> str | None:
    """The inline form of a map given inline or as a file (what configs record), or None."""
    return None if text is None else str(parse_label_map(text))


def parse_inline(text: str) -> LabelMap:
    """An inline map only (what artifacts record): never reads a file."""
    return _build(_parse_inline(text), text)


def _parse_inline(text: str) -> list[tuple[int, str]]:
    from lossxfer.classes import parse_classes

    pairs: list[tuple[int, str]] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        classes, colon, target = part.rpartition(":")
        if not colon or not classes.strip() or not target.strip():
            raise UsageError(f"--label-map {text!r}: expected CLASSES:SUPERCLASS, got {part!r}")
        try:
            ids = parse_classes(classes) or []
        except UsageError:
            raise UsageError(f"--label-map {text!r}: bad class list {classes!r}") from None
        pairs.extend((c, target.strip()) for c in ids)
    return pairs


def _read_file(path: Path, text: str) -> list[tuple[int, str]]:
    if not path.is_file():
        raise UsageError(f"--label-map {text!r}: no such file (inline maps look like 0,6:0;1,7:1)")
    try:
        content = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read label map ({exc})") from exc
    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(content)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not JSON ({exc})") from None
        if not isinstance(mapping, dict):
            raise InputError(f"{path}: expected a JSON object of class → superclass")
        rows = [[str(k), str(v)] for k, v in mapping.items()]
    elif path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(content.splitlines()) if r and any(x.strip() for x in r)]
        if rows and not rows[0][0].strip().isdigit():
            rows = rows[1:]  # a header row
    else:
        raise UsageError(f"--label-map {text!r}: a file must end in .json or .csv")
    pairs = []
    for row in rows:
        if len(row) != 2 or not re.fullmatch(r"\d+", row[0].strip()) or not row[1].strip():
            raise InputError(f"{path}: expected class,superclass rows, got {','.join(row)!r}")
        pairs.append((int(row[0]), row[1].strip()))
    return pairs


def _build(pairs: list[tuple[int, str]], text: str) -> LabelMap:
    if not pairs:
        raise UsageError(f"--label-map {text!r}: maps no class")
    seen: set[int] = set()
    for c, _ in pairs:
        if c in seen:
            raise UsageError(f"--label-map {text!r}: class {c} is mapped twice")
        seen.add(c)
    targets = list(dict.fromkeys(t for _, t in pairs))
    numeric = [t.isdigit() for t in targets]
    if all(numeric):
        ids = sorted(int(t) for t in targets)
        empty = sorted(set(range(ids[-1] + 1)) - set(ids))
        if empty:
            raise UsageError(
                f"--label-map {text!r}: superclass {empty[0]} is empty "
                f"(number superclasses 0-{len(ids) - 1})"
            )
        order, names = [str(i) for i in ids], None
    elif any(numeric):
        raise UsageError(f"--label-map {text!r}: superclasses are all numbers or all names")
    else:
        order, names = targets, tuple(targets)
    groups = tuple(tuple(sorted(c for c, t in pairs if t == target)) for target in order)
    if len(groups) < 2:
        raise UsageError(f"--label-map {text!r}: one superclass; a classifier needs at least 2")
    return LabelMap(groups, names)
