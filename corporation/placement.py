"""Placement: which worker and device each component runs on (pure: from the scenario and its graph).

Rules (DESIGN.md "Placement rules"): a ``backprop`` edge never crosses workers (a component is placed whole)
and a cross-worker edge has latency >= 1. The local engine has one worker, so every component is on worker 0;
a component's device is its members' (``agents.<name>.device``, else the scenario's).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ScenarioError
from .graph import Graph
from .spec import Scenario, is_port


@dataclass(frozen=True)
class Placement:
    """``worker[agent]`` and ``device[agent]`` (a device name as written: ``cpu``, ``cuda:0``, ...)."""

    workers: int
    worker: dict[str, int]
    device: dict[str, str]

    def agents_of(self, worker: int) -> list[str]:
        return [a for a, w in self.worker.items() if w == worker]


def place(scenario: Scenario, graph: Graph, workers: int = 1, explicit: dict[str, int] | None = None) -> Placement:
    """Place every component on a worker (``explicit`` agent -> worker wins; the rest on worker 0) and check
    the rules; each agent's device is its own or the scenario's."""
    explicit = explicit or {}
    worker: dict[str, int] = {}
    for comp in graph.components:
        chosen = {explicit[a] for a in comp if a in explicit}
        if len(chosen) > 1:
            raise ScenarioError(f"agents {', '.join(comp)} are joined by backprop edges and must share a worker, "
                                f"got {sorted(chosen)}: place them together or make their edges 'dni'",
                                "engine.placement")
        w = chosen.pop() if chosen else 0
        if not 0 <= w < workers:
            raise ScenarioError(f"worker {w} does not exist ({workers} workers)", "engine.placement")
        worker.update({a: w for a in comp})
    for i, e in enumerate(scenario.edges):
        if is_port(e.src) or is_port(e.dst) or worker[e.src] == worker[e.dst]:
            continue
        if e.latency < 1:
            raise ScenarioError(f"edge {e.src} -> {e.dst} crosses workers {worker[e.src]} -> {worker[e.dst]}: "
                                "it needs latency >= 1 (set 'latency: 1')", f"edges.{i}.latency")
    device = {a: spec.device or scenario.device for a, spec in scenario.agents.items()}
    return Placement(workers, worker, device)
