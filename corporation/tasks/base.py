"""The task contract: the world that emits inputs on input ports and scores outputs on loss ports.

A task is identified by a ``kind`` in the TASKS registry; its params dataclass types the scenario's
``task:`` keys. ``ports(params)`` must be cheap (no data loading): the graph checks use it at validate time.
Batches are identified by their *id*: the tick at which the task emitted them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch


@dataclass(frozen=True)
class Port:
    """A task port. ``size`` is the message size (input) or the output size it scores (loss);
    ``context_size`` is its size when used as the context of M or I (e.g. one-hot labels)."""

    name: str
    role: Literal["input", "loss"]
    size: int
    context_size: int
    optional: bool = False


@dataclass
class Emission:
    """What the task emits at one tick: a tensor per input port, plus sequence flags for recurrent agents."""

    inputs: dict[str, torch.Tensor]
    start: bool = False  # first step of a new sequence/episode: recurrent state resets
    end: bool = False  # last step of a sequence/episode: no future loss beyond it
    # Per-row episode starts (vectorised environments, whose episodes end at different ticks): a bool
    # tensor (batch,), True where that row's recurrent state must restart from zero. None: no row resets.
    reset: torch.Tensor | None = None


class System(Protocol):
    """What a task's evaluation may call: the trained agents composed as one network on real messages."""

    def compose(self, inputs: dict[str, torch.Tensor], tick: int | None = None,
                synthetic: bool = False) -> dict[str, torch.Tensor]: ...

    def reset_state(self) -> None: ...


class Task(Protocol):
    """Runtime side of a task (built by the engine with a device and a seeded generator)."""

    @classmethod
    def ports(cls, params: Any) -> dict[str, Port]: ...

    def emit(self, tick: int) -> Emission | None: ...

    def context(self, port: str, batch_id: int) -> torch.Tensor: ...

    def loss(self, port: str, batch_id: int, output: torch.Tensor) -> torch.Tensor | None: ...

    def train_metrics(self) -> dict[str, float]: ...

    def evaluate(self, system: System) -> dict[str, float]: ...

    def forget(self, below: int) -> None: ...

    # Optional: ``check_scenario(params, scenario)`` (a classmethod, cheap: no data loading) is called by the
    # graph checks with the validated scenario; it raises ScenarioError naming the key path when the task
    # cannot work with the agents as configured (e.g. a sequence shorter than a recurrent agent's window).
    #
    # Optional: ``window_closed(ports)`` is called after the locked component feeding those loss ports
    # ran its backward pass and stepped; a task that holds outputs (to score them later, e.g. an
    # actor-critic loss that needs the next state's value) must drop them then.
