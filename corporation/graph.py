"""The scenario as a ``networkx.DiGraph``: validation, sizes, locked components, execution order.

Nodes are agent names and task ports (``task.x``); every edge carries its :class:`EdgeSpec` as ``spec``.
``backprop`` edges glue agents into locked components; cycles are allowed only through an edge with
latency >= 1. The documented size limits (docs/scenario.md "Limits") are checked by :mod:`corporation.limits`
once every layer's shape is known. A port whose size could not be checked (its data is not installed) gives a provisional size
and a note in ``unchecked``. Pure: no files, no tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .errors import ScenarioError, did_you_mean
from .limits import check_batchnorm, check_layers, check_model_sizes, check_ports
from .registry import TASKS
from .spec import (
    TASK_PREFIX,
    EdgeSpec,
    Scenario,
    is_port,
)
from .tasks.base import Port


@dataclass
class Graph:
    g: nx.DiGraph
    ports: dict[str, Port]  # port name (without 'task.') -> Port
    order: list[str]  # agents in execution order (topological on latency-0 edges, ties by name)
    components: list[list[str]]  # locked components (agents joined by backprop edges), in order
    out_size: dict[str, int]  # agent -> body output size
    msg_size: dict[tuple[str, str], int]  # (src, dst) -> size of what travels on that edge
    in_size: dict[str, int]  # agent -> size of its concatenated inputs
    unchecked: list[str] = field(default_factory=list)  # what validation could not check (port notes)
    provisional: set[str] = field(default_factory=set)  # "in:<agent>" / "out:<agent>": sizes not checked

    def in_edges(self, agent: str) -> list[EdgeSpec]:
        """An agent's incoming edges, sorted by source (this fixes the input concatenation order)."""
        return [self.g.edges[s, agent]["spec"] for s in sorted(self.g.predecessors(agent))]

    def out_edges(self, agent: str) -> list[EdgeSpec]:
        return [self.g.edges[agent, d]["spec"] for d in sorted(self.g.successors(agent))]

    def context_size(self, context: str, receiver: str | None = None) -> int:
        """Size of a context source: a task port (its context form) or an agent (its message to
        ``receiver``, which is what the receiver holds; its body output when no receiver is given)."""
        if is_port(context):
            return self.ports[context[len(TASK_PREFIX):]].context_size
        return self.out_size[context] if receiver is None else self.msg_size[(context, receiver)]

    def sg_context_size(self, src: str, dst: str, interface: Any) -> int:
        """What M on edge ``src -> dst`` reads beside the message: its context and ``sg.history`` past
        messages of the edge."""
        c = self.context_size(interface.context) if interface.context else 0
        return c + getattr(interface.sg, "history", 0) * self.msg_size[(src, dst)]

    def component_of(self, agent: str) -> list[str]:
        return next(c for c in self.components if agent in c)


def _node_error(name: str, scenario: Scenario, ports: dict[str, Port], path: str) -> ScenarioError:
    options = list(scenario.agents) + [TASK_PREFIX + p for p in ports]
    return ScenarioError(f"unknown node '{name}'{did_you_mean(name, options)}", path)


def build_graph(scenario: Scenario) -> Graph:
    """Check the scenario's graph and compute what the engine needs from it."""
    task = TASKS.get(scenario.task.kind).factory
    ports = task.ports(scenario.task)
    check_ports(ports)
    check_model_sizes(scenario)
    g = nx.DiGraph()
    g.add_nodes_from(scenario.agents)
    for i, e in enumerate(scenario.edges):
        path = f"edges.{i}"
        for end in ("src", "dst"):
            name = getattr(e, end)
            if is_port(name):
                port = ports.get(name[len(TASK_PREFIX):])
                if port is None:
                    raise _node_error(name, scenario, ports, f"{path}.{end}")
                want = "input" if end == "src" else "loss"
                if port.role != want:
                    raise ScenarioError(f"task port '{name}' is a {port.role} port and cannot be an edge's "
                                        f"{end} (inputs flow from input ports, outputs into loss ports)",
                                        f"{path}.{end}")
            elif name not in scenario.agents:
                raise _node_error(name, scenario, ports, f"{path}.{end}")
        if is_port(e.src) and is_port(e.dst):
            raise ScenarioError("an edge must touch at least one agent", path)
        if e.src == e.dst:
            raise ScenarioError(f"self-loop on '{e.src}': an agent's recurrence is internal state, "
                                "not an edge", path)
        if g.has_edge(e.src, e.dst):
            raise ScenarioError(f"duplicate edge {e.src} -> {e.dst}", path)
        g.add_edge(e.src, e.dst, spec=e, index=i)

    for name in scenario.agents:
        if g.in_degree(name) == 0:
            raise ScenarioError(f"agent '{name}' has no incoming edge (feed it from a task port or an agent)",
                                f"agents.{name}")
        if g.out_degree(name) == 0:
            raise ScenarioError(f"agent '{name}' has no outgoing edge (connect it to an agent or a loss port)",
                                f"agents.{name}")
    for pname, port in ports.items():
        node = TASK_PREFIX + pname
        fed = g.in_degree(node) if node in g else 0
        if port.role == "loss" and fed == 0 and not port.optional:
            raise ScenarioError(f"loss port '{node}' is not fed by any agent: add an edge "
                                f"{{src: <agent>, dst: {node}}}", "edges")
        if fed > 1:
            raise ScenarioError(f"loss port '{node}' is fed by several agents; feed it from one", "edges")
    losses = [n for n in g if is_port(n) and ports[n[len(TASK_PREFIX):]].role == "loss"]
    inputs = [n for n in g if is_port(n) and ports[n[len(TASK_PREFIX):]].role == "input"]
    learns = set().union(*(nx.ancestors(g, p) for p in losses))  # one pass per port: fast for populations
    fed = set().union(*(nx.descendants(g, p) for p in inputs))
    for name in scenario.agents:
        if name not in learns:
            raise ScenarioError(f"agent '{name}' reaches no loss port, so it can never learn", f"agents.{name}")
        if name not in fed:
            raise ScenarioError(f"agent '{name}' is reached from no task input port", f"agents.{name}")

    instant = nx.DiGraph()
    instant.add_nodes_from(scenario.agents)
    instant.add_edges_from((e.src, e.dst) for e in scenario.edges
                           if e.latency == 0 and not is_port(e.src) and not is_port(e.dst))
    try:
        cycle = nx.find_cycle(instant)
        where = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
        raise ScenarioError(f"cycle {where} has no edge with latency >= 1: give one of its edges "
                            "'latency: 1'", "edges")
    except nx.NetworkXNoCycle:
        pass
    order = list(nx.lexicographical_topological_sort(instant))

    locked = nx.Graph()
    locked.add_nodes_from(scenario.agents)
    locked.add_edges_from((e.src, e.dst) for e in scenario.edges
                          if e.interface is not None and e.interface.kind == "backprop")
    rank = {a: i for i, a in enumerate(order)}
    components = sorted((sorted(c, key=rank.get) for c in nx.connected_components(locked)),
                        key=lambda c: rank[c[0]])

    for name, agent in scenario.agents.items():
        if agent.state.kind != "bptt" and not getattr(agent.model, "recurrent", False):
            raise ScenarioError(f"state.kind '{agent.state.kind}' needs a recurrent model (lstm, gru, rnn), "
                                f"not '{agent.model.kind}'", f"agents.{name}.state.kind")
    out_size, msg_size, provisional = _sizes(scenario, g, ports)
    in_size = {a: sum(msg_size[(s, a)] for s in g.predecessors(a)) for a in scenario.agents}
    unchecked = list(dict.fromkeys(p.unchecked.note for p in ports.values() if p.unchecked is not None))
    graph = Graph(g, ports, order, components, out_size, msg_size, in_size, unchecked, provisional)
    _check_interfaces(scenario, graph)
    rows_hook = getattr(task, "batch_rows", None)
    rows = rows_hook(scenario.task) if callable(rows_hook) else None
    check_batchnorm(scenario, rows)
    check_layers(scenario, graph, rows)
    task_check = getattr(task, "check_scenario", None)
    if callable(task_check):  # optional task hook, e.g. "no sequence shorter than an agent's window T"
        task_check(scenario.task, scenario)
    _check_rates(scenario, graph, getattr(task, "paced", False))
    return graph


def _sizes(scenario: Scenario, g: nx.DiGraph, ports: dict[str, Port]):
    """Body output sizes, message sizes and the provisional ones (from ports whose size is unchecked)."""
    provisional: set[str] = set()

    def unchecked(node: str) -> bool:
        return is_port(node) and ports[node[len(TASK_PREFIX):]].unchecked is not None

    out_size: dict[str, int] = {}
    for name, agent in scenario.agents.items():
        for dst in agent.heads:
            if not g.has_edge(name, dst):
                raise ScenarioError(f"head '{dst}' names no out-edge of '{name}'"
                                    f"{did_you_mean(dst, list(g.successors(name)))}", f"agents.{name}.heads")
        fixed = getattr(agent.model, "fixed_out", None)
        declared = fixed() if callable(fixed) else getattr(agent.model, "out", None)
        wanted = {}
        for dst in g.successors(name):
            if is_port(dst) and (dst not in agent.heads or agent.heads[dst].out is None):
                wanted[dst] = ports[dst[len(TASK_PREFIX):]].size
        plain = {d: s for d, s in wanted.items() if d not in agent.heads}
        if declared is None:
            if len(set(plain.values())) > 1:
                raise ScenarioError(f"outputs to loss ports of different sizes {plain}: give each a head",
                                    f"agents.{name}.heads")
            if not plain:
                raise ScenarioError("cannot infer the output size: set 'out' (it feeds no loss port directly)",
                                    f"agents.{name}.model.out")
            declared = next(iter(plain.values()))
            if any(unchecked(d) for d in plain):
                provisional.add(f"out:{name}")
        for dst, size in plain.items():
            if size != declared and not unchecked(dst):
                raise ScenarioError(f"size mismatch: '{name}' outputs {declared} but {dst} needs {size}; "
                                    f"set out: {size} or add a head for {dst}", f"agents.{name}.model.out")
        out_size[name] = declared
    msg_size: dict[tuple[str, str], int] = {}
    for src, dst in g.edges:
        if is_port(src):
            msg_size[(src, dst)] = ports[src[len(TASK_PREFIX):]].size
            if unchecked(src):
                provisional.add(f"in:{dst}")
            continue
        head = scenario.agents[src].heads.get(dst)
        if head is None:
            msg_size[(src, dst)] = out_size[src]
            if f"out:{src}" in provisional and not is_port(dst):
                provisional.add(f"in:{dst}")
        else:
            port = ports.get(dst[len(TASK_PREFIX):]) if is_port(dst) else None
            size = head.out if head.out is not None else (port.size if port else None)
            if size is None:
                raise ScenarioError(f"cannot infer the size of head '{dst}': set its 'out'",
                                    f"agents.{src}.heads.{dst}.out")
            if port is not None and size != port.size and port.unchecked is None:
                raise ScenarioError(f"size mismatch: head outputs {size} but {dst} needs {port.size}",
                                    f"agents.{src}.heads.{dst}.out")
            msg_size[(src, dst)] = size
    return out_size, msg_size, provisional


def back_edges(scenario: Scenario, order: list[str]) -> set[tuple[str, str]]:
    """Agent-to-agent edges that close a cycle: their sender acts after their receiver in a tick (so their
    latency is >= 1). A back edge never blocks: its receiver reads the newest message, zeros before the first."""
    rank = {a: i for i, a in enumerate(order)}
    return {(e.src, e.dst) for e in scenario.edges
            if not is_port(e.src) and not is_port(e.dst) and rank[e.src] >= rank[e.dst]}


def _check_rates(scenario: Scenario, graph: Graph, paced: bool) -> None:
    """A receiver slower than its sender on an edge that neither holds nor samples falls ever further behind
    (its inbox grows without bound): refuse it with the fix. An agent's *rate* is how often it can produce:
    every ``period`` ticks, or slower when a blocking input comes slower (task ports emit every tick, unless
    the task is ``paced``: an environment waiting for its action)."""
    back = back_edges(scenario, graph.order)
    every: dict[str, int] = {}
    for name in graph.order:
        p = scenario.agents[name].clock.period
        for e in graph.in_edges(name):
            if e.hold or e.sample or (e.src, e.dst) in back:
                continue
            src = 0 if is_port(e.src) and paced else (1 if is_port(e.src) else every[e.src])
            p = max(p, src)
        every[name] = p
    for i, e in enumerate(scenario.edges):
        if is_port(e.dst) or e.hold or e.sample or (e.src, e.dst) in back or (is_port(e.src) and paced):
            continue
        sender = 1 if is_port(e.src) else every[e.src]
        period = scenario.agents[e.dst].clock.period
        if sender < period:
            raise ScenarioError(
                f"'{e.dst}' acts every {period} ticks but {e.src} sends every {sender}: its inbox would grow "
                f"without end; set 'hold: true' (read the newest message) or 'sample: true' (send only what "
                f"'{e.dst}' reads) on this edge", f"edges.{i}")


def _check_interfaces(scenario: Scenario, graph: Graph) -> None:
    agents = set(scenario.agents)
    ports = [TASK_PREFIX + p for p in graph.ports]
    for i, e in enumerate(scenario.edges):
        iface = e.interface
        if iface is None:
            if e.hold and is_port(e.dst):
                raise ScenarioError("'hold' applies to edges into agents", f"edges.{i}.hold")
            continue
        path = f"edges.{i}.interface"
        if iface.context is not None and iface.context not in ports:
            raise ScenarioError(f"unknown context '{iface.context}'{did_you_mean(iface.context, ports)} "
                                "(M's context must be a task port)", f"{path}.context")
        si = iface.synthetic_input
        if si is not None:
            if si.context not in ports and si.context not in agents:
                raise ScenarioError(f"unknown context '{si.context}'"
                                    f"{did_you_mean(si.context, ports + sorted(agents))}",
                                    f"{path}.synthetic_input.context")
            if si.context == e.dst:
                raise ScenarioError("a synthetic input cannot be predicted from its own receiver",
                                    f"{path}.synthetic_input.context")
            if si.context == e.src:
                raise ScenarioError(f"a synthetic input cannot be predicted from the message it replaces "
                                    f"('{e.src}'): use a task port such as task.x or another agent",
                                    f"{path}.synthetic_input.context")
            if is_port(si.context) and graph.ports[si.context[len(TASK_PREFIX):]].role != "input":
                raise ScenarioError(f"'{si.context}' is a loss port, unknown when the composed network runs: "
                                    "predict the input from an input port or an agent",
                                    f"{path}.synthetic_input.context")
            if si.context in ports and graph.context_size(si.context) < 1:
                raise ScenarioError(f"port '{si.context}' has no context form (size 0), so I cannot read it",
                                    f"{path}.synthetic_input.context")
            if si.context in agents and not graph.g.has_edge(si.context, e.dst):
                raise ScenarioError(f"context agent '{si.context}' sends nothing to '{e.dst}': add an edge "
                                    f"{si.context} -> {e.dst} or use a task port", f"{path}.synthetic_input.context")
            if iface.kind == "backprop":
                raise ScenarioError("a synthetic input needs a 'dni' interface (backprop edges are locked)",
                                    f"{path}.synthetic_input")


# ----- limits (docs/scenario.md "Limits") ------------------------------------------------------------------
