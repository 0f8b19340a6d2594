"""Name registries: builders look classes and functions up by name, never by class-name strings."""
from __future__ import annotations

from typing import Callable, Dict, Generic, TypeVar

V = TypeVar("V")


class Registry(Generic[V]):
    """A mapping from names to objects, filled by the ``register`` decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, V] = {}

    def register(self, name: str) -> Callable[[V], V]:
        def decorate(obj: V) -> V:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj
        return decorate

    def get(self, name: str) -> V:
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list:
        return sorted(self._items)

    def __contains__(self, name) -> bool:
        return name in self._items
