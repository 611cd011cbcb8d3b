"""Scenarios built in Python: from the spec dataclasses, or from a networkx graph. Both are turned into plain
data and go through the same validation and default merging as a YAML file (:func:`scenario.check`), so a
scenario means the same however it was written.

    from corporation import from_graph, resolve, Engine
    G = nx.DiGraph()
    G.add_edge("task.x", "l1"); G.add_edge("l1", "l2", latency=1); G.add_edge("l2", "task.y")
    G.nodes["l1"]["model"] = {"kind": "mlp", "out": 64}
    G.nodes["l2"]["model"] = {"kind": "linear"}
    engine = Engine(from_graph(G, task={"kind": "classification"}, name="chain"))

    engine = Engine(resolve(Scenario(name="chain", task=ClassificationParams(), agents={...}, edges=[...])))
"""
from __future__ import annotations

from typing import Any

from .errors import ScenarioError, short
from .scenario import from_dict, plain
from .schema import to_plain
from .spec import Scenario, is_port


def resolve(scenario: Scenario, overrides: list[str] | tuple[str, ...] = (), strict: bool = True) -> Scenario:
    """A scenario built from the dataclasses (``Scenario``, ``AgentSpec``, ``EdgeSpec``, params), validated and
    merged exactly as its YAML file would be: the default interface is merged into every agent-to-agent
    edge, names and values are checked, derived defaults are filled in. Raises :class:`ScenarioError`."""
    if not isinstance(scenario, Scenario):
        raise ScenarioError(f"expected a corporation Scenario, got {type(scenario).__name__}; for plain data "
                            "use from_dict")
    return from_dict(_unmerged(scenario), overrides, strict=strict)


def _unmerged(scenario: Scenario) -> dict[str, Any]:
    """Plain data of a dataclass scenario; an edge whose interface is None takes the default (as in a file)."""
    data = plain(scenario)
    for e in data["edges"]:
        if e.get("interface") is None:
            e.pop("interface", None)
    return data


def from_graph(graph: Any, task: Any, name: str, overrides: list[str] | tuple[str, ...] = (), strict: bool = True,
               **top: Any) -> Scenario:
    """A scenario from a ``networkx.DiGraph``: nodes are agents (their attributes are agent keys: ``model``,
    ``optimizer``, ``clock``, ``update``, ``heads``, ``state``, ``device``) or task ports named
    ``task.<port>`` (no attributes); edges carry edge keys (``interface``, ``latency``, ``grad_latency``,
    ``hold``, ``sample``). ``task``, ``name`` and the other top-level keys (``seed``, ``device``,
    ``interface``, ``train``, ``imports``) are given as arguments; values may be plain data or the spec
    dataclasses. Edges are listed in ``graph.edges`` order (by source node in insertion order, then by
    target): an agent with several inputs concatenates them in that order. Raises :class:`ScenarioError`."""
    try:
        import networkx as nx
    except ImportError as e:  # a dependency, but say so in one line if it is missing
        raise ScenarioError(f"from_graph needs networkx ({e}): pip install networkx") from None
    if not isinstance(graph, nx.DiGraph) or graph.is_multigraph():
        raise ScenarioError(f"expected a networkx.DiGraph, got {type(graph).__name__}", "graph")
    agents: dict[str, Any] = {}
    for node, attrs in graph.nodes(data=True):
        if not isinstance(node, str):
            raise ScenarioError(f"node {short(node)}: name agents and ports with strings", "graph.nodes")
        if is_port(node):
            if attrs:
                raise ScenarioError(f"a task port takes no attributes, got {', '.join(map(str, attrs))}",
                                    f"graph.nodes.{node}")
            continue
        agents[node] = {k: to_plain(v) for k, v in attrs.items()}
    edges = []
    for src, dst, attrs in graph.edges(data=True):
        edges.append({"src": src, "dst": dst, **{k: to_plain(v) for k, v in attrs.items()}})
    raw = {"name": name, **{k: to_plain(v) for k, v in top.items()}, "task": to_plain(task), "agents": agents,
           "edges": edges}
    return from_dict(raw, overrides, strict=strict)
