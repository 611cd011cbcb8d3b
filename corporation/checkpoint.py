"""Snapshots of a whole engine, and the checkpoint file that holds one (pure: bytes in, bytes out).

A snapshot is the pickled engine (every agent's parameters, every M and I, every optimizer, every
generator, recurrent states, messages and targets in flight, the task's state and environments) taken at a
tick when it is *at rest*: no autograd graph is alive anywhere (no update window is open, no locked message
waits with its graph). Graphs cannot be saved, so a checkpoint asked for mid-window holds the last
snapshot plus the *journal* of engine calls made since (``step``, ``collect``, ``evaluate``); loading replays
them, which is exact because the engine is deterministic (DESIGN.md, "Time and order").

Constant data (a task's dataset tensors, named in the task's optional ``static_data`` tuple of attribute
names) is not saved: it is rebuilt from the scenario by the engine the snapshot is loaded into.
Checkpoints are pickles: load only files you trust (your own run folders).
"""
from __future__ import annotations

import io
import pickle
from typing import Any

import torch

FORMAT = 1


class NotAtRest(Exception):
    """Raised while pickling when a tensor still carries an autograd graph (a window is open)."""


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, static: dict[int, str]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.static = static

    def persistent_id(self, obj: Any) -> str | None:
        return self.static.get(id(obj))

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor) and obj.grad_fn is not None:
            raise NotAtRest("a tensor still carries its autograd graph")
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, static: dict[str, Any]):
        super().__init__(file)
        self.static = static

    def persistent_load(self, pid: str) -> Any:
        if pid not in self.static:
            raise pickle.UnpicklingError(f"checkpoint refers to constant data '{pid}' the task does not have")
        return self.static[pid]


def static_objects(task: Any) -> dict[str, Any]:
    """The task's constant data by name: ``{"task.<attr>": object}`` for each name in ``task.static_data``."""
    return {f"task.{name}": getattr(task, name) for name in getattr(task, "static_data", ())
            if getattr(task, name, None) is not None}


def dumps(obj: Any, static: dict[str, Any]) -> bytes:
    """Pickle ``obj``, writing the objects of ``static`` as references; :class:`NotAtRest` if a graph is alive."""
    buf = io.BytesIO()
    _Pickler(buf, {id(v): k for k, v in static.items()}).dump(obj)
    return buf.getvalue()


def loads(data: bytes, static: dict[str, Any]) -> Any:
    """Unpickle what :func:`dumps` wrote, resolving constant-data references from ``static``."""
    return _Unpickler(io.BytesIO(data), static).load()


def pack(snapshot: bytes, journal: list[str], tick: int, scenario: dict[str, Any],
         weights: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
    """The checkpoint as saved by ``torch.save``: the snapshot, the journal to replay, and (for readers who
    only want the trained networks) each agent's plain ``state_dict``."""
    from . import __version__

    return {"format": FORMAT, "version": __version__, "tick": tick, "scenario": scenario,
            "snapshot": snapshot, "journal": list(journal), "weights": weights}
