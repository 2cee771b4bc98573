"""Named registries (objectives, architectures, datasets, ...).

Registries hold light objects (classes or functions that import torch only when called), so
listing names for --help and tab completion stays instant.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from lossxfer.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the object under `name`; a duplicate name is a bug."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UsageError(unknown_name_message(self.kind, name, self.names())) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)


def check_choice(kind: str, name: str, choices: Iterable[str]) -> str:
    """Return `name` if it is one of `choices`, else raise UsageError (exit 2) with a did-you-mean.

    The one validation every name-valued option and spec key goes through, so a typo is never
    silently accepted and every message reads the same.
    """
    options = list(choices)
    if name not in options:
        raise UsageError(unknown_name_message(kind, name, options))
    return name


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    """'unknown loss 'sofmax' (did you mean 'softmax'?); choose from: ...'."""
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; choose from: {', '.join(choices)}"
