"""Clocks: who acts when. Pure integer arithmetic on ticks."""
from __future__ import annotations

from .spec import ClockSpec


def fires(clock: ClockSpec, tick: int) -> bool:
    """An agent acts at ticks t with t >= phase and (t - phase) % period == 0."""
    return tick >= clock.phase and (tick - clock.phase) % clock.period == 0


def schedule(clock: ClockSpec, ticks: int) -> list[int]:
    """The ticks in [0, ticks) at which the clock fires."""
    return [t for t in range(clock.phase, ticks, clock.period)]
