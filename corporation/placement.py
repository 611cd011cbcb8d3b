"""Placement: which worker and device each component runs on (pure: from the scenario and its graph).

Rules (DESIGN.md "Placement rules"): a ``backprop`` edge never crosses workers (a component is placed whole),
a cross-worker edge has latency >= 1, and an environment (a ``paced`` task: it exists on one worker only)
shares its worker with every agent bound to it (:func:`task_bound`). The local engine has one worker, so every component is on worker 0;
a component's device is its members' (``agents.<name>.device``, else the scenario's).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ScenarioError, did_you_mean
from .graph import Graph, back_edges
from .registry import TASKS
from .spec import TASK_PREFIX, Scenario, is_port


@dataclass(frozen=True)
class Placement:
    """``worker[agent]`` and ``device[agent]`` (a device name as written: ``cpu``, ``cuda:0``, ...)."""

    workers: int
    worker: dict[str, int]
    device: dict[str, str]

    def agents_of(self, worker: int) -> list[str]:
        return [a for a, w in self.worker.items() if w == worker]


def task_bound(scenario: Scenario, graph: Graph) -> list[str]:
    """The agents that must run where an environment task runs, in execution order; none for a data-stream
    task (rebuilt from the seed on every worker, so its inputs, labels and contexts never travel).

    An environment (``paced``) steps in one process only, so on its worker live the agents that read an
    observation port, feed an action or loss port, whose M or I reads a task port's context, or that are
    told every emitted batch id (a synthetic input, or no inbox that blocks: the ids come from the task)."""
    if not getattr(TASKS.get(scenario.task.kind).factory, "paced", False):
        return []
    back = back_edges(scenario, graph.order)
    bound: set[str] = set()
    for e in scenario.edges:
        if is_port(e.src) and not is_port(e.dst):
            bound.add(e.dst)
        if is_port(e.dst) and not is_port(e.src):
            bound.add(e.src)
        iface = e.interface
        if iface is None or iface.kind != "dni" or is_port(e.dst) or is_port(e.src):
            continue
        if iface.context is not None and iface.context.startswith(TASK_PREFIX):
            bound.add(e.src)
        if iface.synthetic_input is not None:
            bound.add(e.dst)
    for name in graph.order:
        ins = graph.in_edges(name)
        if not any(not (e.hold or (e.src, name) in back) for e in ins):
            bound.add(name)
    return [a for a in graph.order if a in bound]


def place(scenario: Scenario, graph: Graph, workers: int = 1, explicit: dict[str, int] | None = None) -> Placement:
    """Place every component on a worker (``explicit`` agent -> worker wins; the rest on worker 0) and check
    the rules; each agent's device is its own or the scenario's."""
    explicit = explicit or {}
    for a in explicit:
        if a not in scenario.agents:
            raise ScenarioError(f"no agent '{a}'{did_you_mean(a, scenario.agents)}", f"engine.placement.{a}")
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
    bound = task_bound(scenario, graph)
    if len({worker[a] for a in bound}) > 1:
        where = ", ".join(f"{a}: {worker[a]}" for a in bound)
        raise ScenarioError(f"task '{scenario.task.kind}' is an environment and runs on one worker: the agents bound "
                            f"to it ({where}) must share that worker; place them together", "engine.placement")
    for i, e in enumerate(scenario.edges):
        if is_port(e.src) or is_port(e.dst) or worker[e.src] == worker[e.dst]:
            continue
        if e.latency < 1:
            raise ScenarioError(f"edge {e.src} -> {e.dst} crosses workers {worker[e.src]} -> {worker[e.dst]}: "
                                "it needs latency >= 1 (set 'latency: 1')", f"edges.{i}.latency")
    device = {a: spec.device or scenario.device for a, spec in scenario.agents.items()}
    return Placement(workers, worker, device)


def cost(scenario: Scenario, graph: Graph, sizes: dict[str, int]) -> dict[str, float]:
    """The documented cost estimate of an agent: its parameter count (``sizes``) times how often it acts
    (1 / clock period): the multiply-adds per tick of a dense network, up to the batch size."""
    return {a: (sizes.get(a, 0) + 1) / scenario.agents[a].clock.period for a in graph.order}


def infer(scenario: Scenario, graph: Graph, workers: int, sizes: dict[str, int],
          explicit: dict[str, int] | None = None) -> dict[str, int]:
    """An agent -> worker map for ``workers`` workers: agents joined by backprop or latency-0 edges (which
    cannot cross workers), and the agents bound to an environment (:func:`task_bound`), form units; units are assigned largest first to the least loaded worker (by :func:`cost`); ``explicit``
    agents keep their worker and bring their unit along."""
    explicit = dict(explicit or {})
    for a in explicit:
        if a not in scenario.agents:
            raise ScenarioError(f"no agent '{a}'{did_you_mean(a, scenario.agents)}", f"engine.placement.{a}")
    parent = {a: a for a in graph.order}

    def root(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def join(a: str, b: str) -> None:
        parent[root(a)] = root(b)

    for e in scenario.edges:
        if not is_port(e.src) and not is_port(e.dst) and (e.latency < 1 or e.interface is None
                                                           or e.interface.kind == "backprop"):
            join(e.src, e.dst)
    bound = task_bound(scenario, graph)
    for a in bound[1:]:  # an environment's agents: one unit
        join(a, bound[0])
    units: dict[str, list[str]] = {}
    for a in graph.order:
        units.setdefault(root(a), []).append(a)
    weight = cost(scenario, graph, sizes)
    load = [0.0] * workers
    out: dict[str, int] = {}
    pinned = [(u, {explicit[a] for a in u if a in explicit}) for u in units.values()]
    for unit, chosen in pinned:
        if chosen:  # named agents keep their worker (place() then checks the rules); the rest follow
            w = min(chosen)
            out.update({a: explicit.get(a, w) for a in unit})
            load[w] += sum(weight[a] for a in unit)
    free = sorted((u for u, chosen in pinned if not chosen), key=lambda u: (-sum(weight[a] for a in u), u[0]))
    for unit in free:
        w = min(range(workers), key=lambda k: (load[k], k))
        out.update({a: w for a in unit})
        load[w] += sum(weight[a] for a in unit)
    return out
