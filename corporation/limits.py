"""Sizes a scenario asks for, checked against the documented limits (docs/scenario.md "Limits") before
anything is allocated: widths, layers, weights, activations, ports, and batch norm with a batch of one row.
Pure: shapes only, no tensors."""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from .errors import ScenarioError
from .spec import MAX_ACTIVATIONS, MAX_LAYER_WEIGHTS, MAX_LAYERS, MAX_PORT, MAX_WEIGHTS, MAX_WIDTH, Scenario
from .tasks.base import Port

if TYPE_CHECKING:
    from .graph import Graph

GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # weight blocks of a recurrent cell


def check_ports(ports: dict[str, Port]) -> None:
    """A task port larger than MAX_PORT (e.g. a huge observation space) is refused."""
    for name, port in ports.items():
        if port.unchecked is None and max(port.size, port.context_size) > MAX_PORT:
            raise ScenarioError(f"port task.{name} has size {max(port.size, port.context_size):_}, above the limit "
                                f"of {MAX_PORT:_}: use a smaller input (e.g. task.observe)", "task")


def _widths(params: Any) -> tuple[list[int], bool]:
    """A model's declared layer widths (out, hidden sizes) and whether ``hidden`` is a list of layers."""
    widths = [params.out] if isinstance(getattr(params, "out", None), int) else []
    hidden = getattr(params, "hidden", None)
    if isinstance(hidden, list):
        return widths + [h for h in hidden if isinstance(h, int)], True
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        widths.append(hidden)
    return widths, False


def check_model_sizes(scenario: Scenario) -> None:
    """Every declared width <= MAX_WIDTH and at most MAX_LAYERS hidden layers, for any model kind."""
    for name, agent in scenario.agents.items():
        path = f"agents.{name}.model"
        model = agent.model
        hidden = getattr(model, "hidden", None)
        if isinstance(hidden, list) and len(hidden) > MAX_LAYERS:
            raise ScenarioError(f"at most {MAX_LAYERS} hidden layers, got {len(hidden)}", f"{path}.hidden")
        for key in ("out", "hidden"):
            value = getattr(model, key, None)
            values = value if isinstance(value, list) else [value]
            for i, v in enumerate(values):
                if isinstance(v, int) and v > MAX_WIDTH:
                    where = f"{path}.{key}" + (f".{i}" if isinstance(value, list) else "")
                    raise ScenarioError(f"must be <= {MAX_WIDTH:_} (a layer width), got {v:_}", where)
    for path, sg in _synthesizers(scenario):
        width, hidden = getattr(sg, "width", None), getattr(sg, "hidden", None)
        if isinstance(width, int) and width > MAX_WIDTH:
            raise ScenarioError(f"must be <= {MAX_WIDTH:_} (a layer width), got {width:_}", f"{path}.width")
        if isinstance(hidden, int) and hidden > MAX_LAYERS:
            raise ScenarioError(f"must be <= {MAX_LAYERS} (hidden layers of M), got {hidden:_}", f"{path}.hidden")


def _synthesizers(scenario: Scenario) -> list[tuple[str, Any]]:
    """(key path, params) of every M that will be built: on dni edges and on dni states."""
    out = [(f"edges.{i}.interface.sg", e.interface.sg) for i, e in enumerate(scenario.edges)
           if e.interface is not None and e.interface.kind == "dni"]
    out += [(f"agents.{n}.state.sg", a.state.sg) for n, a in scenario.agents.items() if a.state.kind == "dni"]
    return out


def _batchnorms(scenario: Scenario) -> list[str]:
    """Key paths of every batch norm that will be built (in an agent's MLP, in M, in I)."""
    paths = []
    for name, agent in scenario.agents.items():
        model = agent.model
        if getattr(model, "batchnorm", False):
            hidden = getattr(model, "hidden", None)
            if model.kind != "mlp" or hidden or getattr(model, "out_activation", True):
                paths.append(f"agents.{name}.model.batchnorm")
    for path, sg in _synthesizers(scenario):
        if getattr(sg, "batchnorm", False) and getattr(sg, "hidden", 0):
            paths.append(f"{path}.batchnorm")
    for i, e in enumerate(scenario.edges):
        si = e.interface.synthetic_input if e.interface is not None else None
        if si is not None and si.batchnorm and si.hidden:
            paths.append(f"edges.{i}.interface.synthetic_input.batchnorm")
    return paths


def check_batchnorm(scenario: Scenario, rows: tuple[int, str] | None) -> None:
    """Batch norm cannot train on batches of one row (PyTorch refuses them): a one-line error instead."""
    paths = _batchnorms(scenario) if rows is not None and rows[0] == 1 else []
    if paths:
        raise ScenarioError(f"batch norm needs more than 1 row per training batch, but {rows[1]} is 1: raise "
                            f"{rows[1]} or set batchnorm: false", paths[0])


def _chain(sizes: list[int]) -> list[tuple[int, int]]:
    return list(itertools.pairwise(sizes))


def _body_layers(params: Any, in_size: int, out_size: int) -> list[tuple[int, int]]:
    """(inputs, outputs) of each weight matrix of an agent body (recurrent cells count all their gates)."""
    hidden = getattr(params, "hidden", None)
    if getattr(params, "recurrent", False) and isinstance(hidden, int):
        layers = [(in_size + hidden, GATES.get(params.kind, 4) * hidden)]
        return layers + ([(hidden, out_size)] if getattr(params, "readout", True) else [])
    return _chain([in_size, *(hidden if isinstance(hidden, list) else []), out_size])


def _regression_layers(params: Any, in_size: int, out_size: int) -> list[tuple[int, int]]:
    """Weight matrices of M or I: ``hidden`` layers of ``width``."""
    hidden, width = getattr(params, "hidden", 0), getattr(params, "width", 0)
    if not isinstance(hidden, int) or not isinstance(width, int):
        return []
    return _chain([in_size, *[width] * hidden, out_size])


def _state_size(agent: Any) -> int:
    hidden = agent.model.hidden
    return hidden * (2 if agent.model.kind == "lstm" else 1)


def _all_layers(scenario: Scenario, graph: Graph) -> list[tuple[str, int, int]]:
    """(key path, inputs, outputs) of every weight matrix the scenario builds."""
    layers = []
    for name, agent in scenario.agents.items():
        path = f"agents.{name}"
        layers += [(f"{path}.model", a, b) for a, b in
                   _body_layers(agent.model, graph.in_size[name], graph.out_size[name])]
        layers += [(f"{path}.heads.{dst}", graph.out_size[name], graph.msg_size[(name, dst)])
                   for dst in agent.heads]
        if agent.state.kind == "dni" and isinstance(getattr(agent.model, "hidden", None), int):
            size = _state_size(agent)
            layers += [(f"{path}.state.sg", a, b) for a, b in _regression_layers(agent.state.sg, size, size)]
    for i, e in enumerate(scenario.edges):
        iface = e.interface
        if iface is None:
            continue
        h = graph.msg_size[(e.src, e.dst)]
        if iface.kind == "dni":
            c = graph.sg_context_size(e.src, e.dst, iface)
            layers += [(f"edges.{i}.interface.sg", a, b) for a, b in _regression_layers(iface.sg, h + c, h)]
        si = iface.synthetic_input
        if si is not None:
            c = graph.context_size(si.context, e.dst)
            layers += [(f"edges.{i}.interface.synthetic_input", a, b) for a, b in _regression_layers(si, c, h)]
    return layers


def check_layers(scenario: Scenario, graph: Graph, rows: tuple[int, str] | None) -> None:
    """Refuse an input above MAX_PORT, a layer above MAX_LAYER_WEIGHTS weights or MAX_ACTIVATIONS activations
    per batch, and a scenario above MAX_WEIGHTS weights in all."""
    for name, size in graph.in_size.items():
        if size > MAX_PORT:
            raise ScenarioError(f"the agent's inputs add up to {size:_} values, above the limit of {MAX_PORT:_}",
                                f"agents.{name}")
    total = 0
    for path, a, b in _all_layers(scenario, graph):
        total += a * b
        if a * b > MAX_LAYER_WEIGHTS:
            raise ScenarioError(f"a layer of {a:_} inputs x {b:_} outputs has {a * b:_} weights, above the limit "
                                f"of {MAX_LAYER_WEIGHTS:_} per layer: make it smaller", path)
        if rows is not None and rows[0] * b > MAX_ACTIVATIONS:
            raise ScenarioError(f"{rows[0]:_} rows ({rows[1]}) x {b:_} outputs = {rows[0] * b:_} activations per "
                                f"batch, above the limit of {MAX_ACTIVATIONS:_}: use a smaller batch or layer",
                                path)
    if total > MAX_WEIGHTS:
        raise ScenarioError(f"the scenario's layers have {total:_} weights in all, above the limit of "
                            f"{MAX_WEIGHTS:_}: use fewer or smaller agents", "agents")
