"""Text rendering of a scenario for ``corporation show``: agents, edges, locked components, clock table."""
from __future__ import annotations

import math

from .errors import ScenarioError
from .graph import Graph, build_graph
from .schedule import simulate
from .spec import Scenario

MAX_TICKS = 1000  # columns of the clock table (show --ticks)


def check_ticks(ticks: int | None) -> None:
    """``show --ticks`` must be within 1..MAX_TICKS (one column per tick)."""
    if ticks is not None and not 1 <= ticks <= MAX_TICKS:
        raise ScenarioError(f"must be within 1..{MAX_TICKS} (columns of the clock table), got {ticks}", "--ticks")


def _size(graph: Graph, side: str, agent: str) -> str:
    """An agent's input or output size, '?' where it depends on a size that could not be checked."""
    if f"{side}:{agent}" in graph.provisional:
        return "?"
    return str((graph.in_size if side == "in" else graph.out_size)[agent])


def clock_table(scenario: Scenario, ticks: int) -> list[str]:
    """Who does what when, as the engine will run it (:mod:`corporation.schedule`): 'A' processes a batch,
    'U' its component updates (as scheduled, before p_update), 'i' its clock fires but nothing is complete
    (it waits for a message), '.' its clock does not fire."""
    check_ticks(ticks)
    graph = build_graph(scenario)
    plan = simulate(scenario, graph, ticks)
    rows = {n: "".join("U" if x.updated else "A" if x.acted is not None else "i" if x.fired else "."
                       for x in plan[n]) for n in graph.order}
    width = max(len(n) for n in graph.order)
    header = " " * width + "  " + "".join(str(t % 10) for t in range(ticks))
    return [header] + [f"{n:<{width}}  " + rows[n] for n in graph.order]


def describe(scenario: Scenario, ticks: int | None = None) -> str:
    """The text of ``corporation show``: agents, edges, locked components, the clock table (``ticks``
    columns, 1..MAX_TICKS; default: two update cycles, at most 80), and what could not be checked."""
    check_ticks(ticks)
    graph = build_graph(scenario)
    lines = [f"scenario {scenario.name} (seed {scenario.seed}, task {scenario.task.kind})"]
    lines += [f"not checked: {note} (sizes shown as ?)" for note in graph.unchecked]
    lines += ["", "agents:"]
    for n in graph.order:
        a = scenario.agents[n]
        lines.append(f"  {n}: {a.model.kind} in {_size(graph, 'in', n)} out {_size(graph, 'out', n)}, "
                     f"clock period {a.clock.period} phase {a.clock.phase}, unroll {a.update.unroll}, "
                     f"p_update {a.update.prob}, {a.optimizer.kind} lr {a.optimizer.lr:g}")
    lines += ["", "edges:"]
    for e in scenario.edges:
        what = "data" if e.interface is None else e.interface.kind
        if e.interface is not None and e.interface.kind == "dni":
            sg = e.interface.sg
            what += f" (M: {'linear' if sg.hidden == 0 else f'{sg.hidden}x{sg.width}'}"
            what += f", context {e.interface.context})" if e.interface.context else ")"
            if e.interface.synthetic_input is not None:
                what += f" + synthetic input from {e.interface.synthetic_input.context}"
        extra = f", latency {e.latency}" if e.latency else ""
        extra += ", hold" if e.hold else ""
        extra += ", sample (posts only when the receiver reads)" if e.sample else ""
        lines.append(f"  {e.src} -> {e.dst}: {what}{extra}")
    lines += ["", "locked components (trained by one backward pass each):"]
    lines += [f"  {{{', '.join(c)}}}" for c in graph.components]
    if scenario.engine.kind == "distributed":
        from .distributed import plan

        placement = plan(scenario, scenario.engine.workers)
        head = (f"placement ({scenario.engine.workers} workers, {scenario.engine.mode}; cost = parameters / "
                "clock period, docs/distributed.md):")
        lines += ["", head]
        lines += [f"  worker {w}: {', '.join(placement.agents_of(w)) or '(idle)'}"
                  for w in range(placement.workers)]
    if ticks is None:
        cycle = math.lcm(*[a.clock.period * a.update.unroll for a in scenario.agents.values()])
        phase = max(a.clock.phase for a in scenario.agents.values())
        ticks = min(max(12, 2 * cycle + phase), 80)
    lines += ["", f"clock table, ticks 0..{ticks - 1} (A acts, U updates, i waits for a message, . off its clock):"]
    lines += ["  " + row for row in clock_table(scenario, ticks)]
    return "\n".join(lines)
