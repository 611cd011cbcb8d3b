"""Registries: the extension points (models, synthesizers, tasks, datasets).

A registry maps a ``kind`` name to a factory and, optionally, the dataclass that types that kind's
parameters in a scenario file. Users register their own entries with ``@REGISTRY.register("name")``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import did_you_mean

F = TypeVar("F")


@dataclass(frozen=True)
class Entry(Generic[F]):
    name: str
    factory: F
    params: type | None  # dataclass typing this kind's scenario keys, if any


class Registry(Generic[F]):
    """Name -> factory, with the params dataclass used to validate scenario keys."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, Entry[F]] = {}

    def register(self, name: str, params: type | None = None) -> Callable[[F], F]:
        def deco(factory: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.what} '{name}' is already registered")
            self._entries[name] = Entry(name, factory, params)
            return factory

        return deco

    def get(self, name: str) -> Entry[F]:
        if name not in self._entries:
            raise KeyError(f"unknown {self.what} '{name}'{did_you_mean(name, self._entries)}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: Any) -> bool:
        return name in self._entries


# The project's registries. Modules register into them at import time (see corporation/__init__.py).
MODELS: Registry = Registry("model")
SYNTHESIZERS: Registry = Registry("synthesizer")
TASKS: Registry = Registry("task")
DATASETS: Registry = Registry("dataset")
