"""What the engine will do, tick by tick, worked out from the scenario alone (no tensors, no data).

:func:`simulate` replays the engine's scheduling rules (DESIGN.md "An agent's tick"): the task emits every
tick (a ``paced`` task only once every loss port answered the last batch), messages arrive after their
latency (a ``sample`` edge carries only what its receiver reads, a ``hold`` edge keeps the newest, an edge
closing a cycle never blocks), each agent at its ticks processes the oldest batch id whose blocking inputs
are all there (a synthetic input stands in once its context exists), and a component updates when all its
members are due. Updates are shown as scheduled, before p_update. ``show`` prints it; a test checks it
against the engine's trace on every shipped scenario.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .clock import fires
from .graph import Graph, back_edges
from .registry import TASKS
from .spec import EdgeSpec, Scenario, is_port


@dataclass
class _Edge:
    spec: EdgeSpec
    hold: bool
    back: bool  # closes a cycle: never blocks, zeros before the first message
    si_context: str | None
    flight: list[tuple[int, int]] = field(default_factory=list)  # (due tick, batch id)
    ids: set[int] = field(default_factory=set)
    newest: int | None = None
    delivered: set[int] = field(default_factory=set)  # every id that ever arrived (I's agent contexts)


@dataclass
class Tick:
    """One agent at one tick: ``acted`` the batch id it processed (None: it did not), ``fired`` whether
    its clock fired, ``updated`` whether its component updated."""

    acted: int | None = None
    fired: bool = False
    updated: bool = False


def simulate(scenario: Scenario, graph: Graph, ticks: int) -> dict[str, list[Tick]]:
    """Per agent (in execution order), what happens at each of the first ``ticks`` ticks."""
    paced = bool(getattr(TASKS.get(scenario.task.kind).factory, "paced", False))
    back = back_edges(scenario, graph.order)
    edges = {}
    for e in scenario.edges:
        if is_port(e.dst):
            continue
        si = e.interface.synthetic_input if e.interface is not None else None
        cyc = (e.src, e.dst) in back
        edges[(e.src, e.dst)] = _Edge(e, e.hold or cyc, cyc, si.context if si else None)
    inboxes = {a: [edges[(e.src, e.dst)] for e in graph.in_edges(a)] for a in graph.order}
    last = {a: -1 for a in graph.order}
    acted = {a: 0 for a in graph.order}
    due = {a: False for a in graph.order}
    loss_feeders = [e.src for e in scenario.edges if is_port(e.dst)]
    live: list[int] = []
    pending: int | None = None
    answered: set[str] = set()
    out: dict[str, list[Tick]] = {a: [] for a in graph.order}
    for t in range(ticks):
        if not paced or pending is None:
            live.append(t)
            pending, answered = t, set()
            for e in scenario.edges:
                if is_port(e.src) and not (e.sample and not fires(scenario.agents[e.dst].clock, t + e.latency)):
                    edges[(e.src, e.dst)].flight.append((t + e.latency, t))
        _deliver(edges.values(), t, last)
        for a in graph.order:
            row = Tick(fired=fires(scenario.agents[a].clock, t))
            out[a].append(row)
            if not row.fired:
                continue
            k = _pick(a, inboxes[a], edges, live, last[a], scenario)
            if k is None:
                continue
            row.acted = k
            for e in graph.out_edges(a):
                if is_port(e.dst):
                    answered.add(a)
                    continue
                si = e.interface is not None and e.interface.synthetic_input is not None
                if e.sample and not fires(scenario.agents[e.dst].clock, t + (0 if si else e.latency)):
                    continue
                edges[(a, e.dst)].flight.append((t + e.latency, k))
                _deliver([edges[(a, e.dst)]], t, last)
            for edge in inboxes[a]:
                if not edge.hold:
                    edge.ids = {i for i in edge.ids if i > k}
            last[a] = max(last[a], k)
            acted[a] += 1
            due[a] = due[a] or acted[a] >= scenario.agents[a].update.unroll
        for comp in graph.components:
            if all(due[n] for n in comp):
                for n in comp:
                    due[n], acted[n] = False, 0
                    out[n][-1].updated = True
        if paced and pending is not None and set(loss_feeders) <= answered:
            pending = None
    return out


def _deliver(edges, t: int, last: dict[str, int]) -> None:
    for edge in edges:
        ready = [k for d, k in edge.flight if d <= t]
        if not ready:
            continue
        edge.flight = [(d, k) for d, k in edge.flight if d > t]
        for k in ready:
            if edge.hold:
                edge.ids = set()
            edge.ids.add(k)
            edge.delivered.add(k)
            edge.newest = k if edge.newest is None else max(edge.newest, k)
            if edge.si_context is not None and not edge.hold and k <= last[edge.spec.dst]:
                edge.ids.discard(k)  # too late: it only trains I


def _pick(agent: str, inboxes: list[_Edge], edges: dict, live: list[int], last: int,
          scenario: Scenario) -> int | None:
    """The engine's rule (Agent.pick) on ids alone."""
    def si_ready(edge: _Edge, k: int) -> bool:
        if edge.si_context is None:
            return False
        if is_port(edge.si_context):
            return k in live
        return k in edges[(edge.si_context, agent)].delivered

    blocking = [e for e in inboxes if not e.hold]
    holds = [e for e in inboxes if e.hold]
    if any(e.newest is None and e.si_context is None and not e.back for e in holds):
        return None
    if not blocking:
        ids = [e.newest for e in holds if e.newest is not None and not e.back]
        return max(ids) if ids else (live[-1] if live else None)
    pool: set[int] = set()
    for e in blocking:
        pool.update(k for k in e.ids if k > last)
        if e.si_context is not None:
            pool.update(k for k in live if k > last and (not e.spec.sample or fires(scenario.agents[agent].clock, k)))
    for k in sorted(pool):
        if all(k in e.ids or si_ready(e, k) for e in blocking):
            return k
    return None

