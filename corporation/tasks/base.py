"""The task contract: the world that emits inputs on input ports and scores outputs on loss ports.

A task is identified by a ``kind`` in the TASKS registry; its params dataclass types the scenario's
``task:`` keys. ``ports(params)`` must be cheap (at most a small, cached read, e.g. a corpus for its
vocabulary): the graph checks use it at validate time. When a size needs data that is not installed,
``ports`` returns a provisional size with an :class:`Unchecked` note instead of failing, so validation works
without the data and says what it could not check; a run raises the note's error. Batches are identified by
their *id*: the tick at which the task emitted them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from ..errors import CorporationError


@dataclass(frozen=True)
class Unchecked:
    """A port size that validation could not check: ``note`` says what and why (``validate`` prints it),
    ``error`` is what a run raises (e.g. the DataError saying how to install the missing corpus)."""

    note: str
    error: CorporationError


@dataclass(frozen=True)
class Port:
    """A task port. ``size`` is the message size (input) or the output size it scores (loss);
    ``context_size`` is its size when used as the context of M or I (e.g. one-hot labels)."""

    name: str
    role: Literal["input", "loss"]
    size: int
    context_size: int
    optional: bool = False
    unchecked: Unchecked | None = field(default=None, compare=False)  # a provisional size (module doc)


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

    # Optional: ``batch_rows(params) -> (rows, key)`` (a classmethod): the rows of every training batch and
    # the key that sets them (e.g. ``(params.batch_size, "task.batch_size")``); the graph checks refuse batch
    # norm with a single row and cap rows x layer width.
    #
    # Optional: ``static_data`` (a class attribute): names of attributes holding constant data built from the
    # params (datasets, corpora). Checkpoints store them as references and take them from a freshly built
    # task when loading, instead of pickling them (see corporation.checkpoint).
    #
    # Optional: ``check_scenario(params, scenario)`` (a classmethod, cheap: at most the cached read that
    # ``ports`` does) is called by the graph checks with the validated scenario; it raises ScenarioError
    # (or DataError) when the task cannot work with the agents as configured (e.g. a sequence shorter than
    # a recurrent agent's window, a corpus too short for its streams).
    #
    # Optional: ``paced`` (class attribute, True for an environment): emits only once its action ports
    # answered. ``adaptive`` (class attribute): the stream depends on the scores (a curriculum). Neither can
    # be rebuilt on every worker of a distributed run (corporation.distributed refuses them for now).
    #
    # Optional: ``learner(port) -> PortLearner | None``: what lives on the acting agent's side of loss port
    # ``port`` instead of :class:`TaskLoss` (e.g. an actor-critic that samples actions, keeps the rollout
    # with its graphs and returns its loss: corporation.envs.a2c). The task then gets only what the learner
    # hands it (detached actions) and never holds an autograd graph.


class PortLearner(Protocol):
    """The acting agent's side of a loss port: it scores the agent's outputs and lives in the agent
    (``Agent.loss_ports``), so whatever holds autograd graphs stays in the agent's component."""

    def score(self, batch_id: int, output: torch.Tensor) -> torch.Tensor | None:
        """The loss to backpropagate in the current update window (None: nothing yet)."""
        ...

    def window_closed(self) -> None:
        """The agent's update window ended: graphs from it are spent."""
        ...

    def at_rest(self) -> bool:
        """Nothing of the current window is held (a checkpoint may be taken)."""
        ...

    def read(self) -> dict[str, float]:
        """Training metrics since the last read."""
        ...


class TaskLoss:
    """The default learner of a loss port: the task's own loss of the output (``task.loss``)."""

    def __init__(self, task: Task, port: str):
        self.task = task
        self.port = port

    def score(self, batch_id: int, output: torch.Tensor) -> torch.Tensor | None:
        return self.task.loss(self.port, batch_id, output)

    def window_closed(self) -> None:
        pass

    def at_rest(self) -> bool:
        return True

    def read(self) -> dict[str, float]:
        return {}
