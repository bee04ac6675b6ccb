"""Name-keyed registries of kinds (formats, blocks, predictors, features) with helpful misses."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nasq.errors import NasqError

T = TypeVar("T")


class UnknownKindError(NasqError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it one plain line
        return str(self.args[0])


class Registry(Generic[T]):
    """One registry per kind of thing. ``register`` is a decorator; lookups that miss suggest."""

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise NasqError(f"{self.what} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownKindError(self.miss_message(name)) from None

    def miss_message(self, name: str) -> str:
        known = ", ".join(sorted(self._items))
        close = difflib.get_close_matches(str(name), list(self._items), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown {self.what} '{name}' (known: {known}){hint}"

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
