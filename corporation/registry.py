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
"""Agent bodies: ``factory(params, in_size, out_size)`` returns an ``nn.Module`` (see :mod:`corporation.models`).

Seeding (:func:`corporation.models.build_model`); each agent has its own ``torch.Generator``, derived from
(scenario seed, agent name):

1. The factory runs under a forked copy of the global (CPU) torch RNG, seeded from the agent's generator
   seed without drawing from the generator. The global RNG is left untouched, and whatever the module draws
   while being built (a Conv2d, a custom layer, the factory's own init of a Linear) differs across seeds and
   agents and is the same for the same seed. Nothing overwrites it afterwards.
2. A factory that declares a keyword parameter ``generator`` (``factory(params, in_size, out_size, *,
   generator)``) is passed the agent's generator and must draw every parameter from it (e.g.
   ``p.uniform_(-b, b, generator=generator)``, ``nn.init.orthogonal_(w, generator=generator)``). The
   built-in kinds do this (``models.init_parameters``: PyTorch's default init drawn from the generator).
3. Then every submodule whose ``reset_parameters`` takes a parameter named ``generator`` is called as
   ``reset_parameters(generator=generator)``, outermost module first (``module.modules()`` order), so a
   custom layer can keep its own init rule while drawing from the agent's stream.
4. Last, the module is moved to the agent's device.
"""
SYNTHESIZERS: Registry = Registry("synthesizer")
TASKS: Registry = Registry("task")
DATASETS: Registry = Registry("dataset")
