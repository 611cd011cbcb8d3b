"""corporation: systems of independent neural networks that learn together through Decoupled Neural
Interfaces (Jaderberg et al. 2017): messages forward, synthetic gradients and synthetic inputs back,
every network on its own clock.

Quick use::

    from corporation import load, Engine
    engine = Engine(load("scenarios/ff_digits.yaml"))
    engine.run()

Scenarios built in Python go through the same validation: ``resolve(Scenario(...))`` for the spec
dataclasses, ``from_graph(networkx.DiGraph, task=..., name=...)`` for a graph (:mod:`corporation.builders`).
"""
from . import interfaces, models, rnn_models, tasks  # noqa: F401  (register the built-in kinds)
from .builders import from_graph, resolve
from .engine import Engine, Event
from .errors import CorporationError, DataError, ScenarioError
from .guard import Diverged
from .runner import load_run
from .scenario import dump, from_dict, load

__version__ = "0.1.0"
__all__ = ["CorporationError", "DataError", "Diverged", "Engine", "Event", "ScenarioError", "dump", "from_dict",
           "from_graph", "load", "load_run", "resolve"]
