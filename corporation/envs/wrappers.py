"""Gymnasium's own wrappers named in a scenario: ``task.wrappers: [Name, {Name: {arg: value}}, ...]``.

Each entry is the name of a class in ``gymnasium.wrappers`` (e.g. ``NormalizeObservation``, ``ClipReward``,
``TimeLimit``, ``FlattenObservation``), alone or mapped to its keyword arguments; they wrap every copy of the
environment in the order written (the first is innermost). Wrappers with state (the running statistics of
``NormalizeObservation`` / ``NormalizeReward``) keep it per copy: the test environments start fresh.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym

from ..errors import ScenarioError, did_you_mean, short

Wrappers = tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]  # hashable: (name, sorted kwargs) per wrapper


def _names() -> list[str]:
    import gymnasium.wrappers as w

    return sorted(n for n in dir(w) if isinstance(getattr(w, n), type) and issubclass(getattr(w, n), gym.Wrapper))


def parse(entries: list[Any], path: str) -> Wrappers:
    """The validated wrapper list: one-line errors name ``path.N`` and the fix."""
    import gymnasium.wrappers as w

    out = []
    for i, entry in enumerate(entries):
        where = f"{path}.{i}"
        if isinstance(entry, str):
            name, kwargs = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1 and isinstance(next(iter(entry.values())), dict | None):
            name, kwargs = next(iter(entry.items()))
            kwargs = kwargs or {}
        else:
            raise ScenarioError(f"expected a wrapper name or {{Name: {{arg: value}}}}, got {short(repr(entry))}",
                                where)
        cls = getattr(w, str(name), None)
        if not (isinstance(cls, type) and issubclass(cls, gym.Wrapper)):
            raise ScenarioError(f"unknown Gymnasium wrapper {short(str(name))}{did_you_mean(str(name), _names())}",
                                where)
        out.append((str(name), tuple(sorted(kwargs.items()))))
    return tuple(out)


def apply(env: gym.Env, wrappers: Wrappers) -> gym.Env:
    """``env`` wrapped by each of ``wrappers`` in order (the first innermost)."""
    import gymnasium.wrappers as w

    for name, kwargs in wrappers:
        env = getattr(w, name)(env, **dict(kwargs))
    return env
