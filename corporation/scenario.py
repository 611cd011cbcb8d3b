"""Scenario files: YAML in, validated :class:`Scenario` out; ``--set`` overrides; the resolved copy.

IO lives here (reading files); the schema itself is in :mod:`corporation.spec`.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from . import graph as graph_mod
from .errors import ScenarioError, did_you_mean
from .schema import build, to_plain
from .spec import Scenario, is_port


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.0.c=value`` -> (['a','b','0','c'], value parsed as a YAML scalar or flow list/map)."""
    if "=" not in item:
        raise ScenarioError(f"override '{item}' must look like KEY=VALUE (e.g. interface.kind=backprop)",
                            "--set")
    key, _, text = item.partition("=")
    if not key or any(not part for part in key.split(".")):
        raise ScenarioError(f"override '{item}' has an empty key part", "--set")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise ScenarioError(f"override '{item}': value is not valid YAML ({e.problem})", "--set") from None
    return key.split("."), value


def apply_override(raw: dict, parts: list[str], value: Any) -> None:
    """Set ``raw[parts...] = value``, creating mappings on the way; list items are addressed by index."""
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise ScenarioError(f"'{part}' is not an index of this list of {len(node)} items", where)
            idx = int(part)
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ScenarioError(f"cannot set a key inside {node!r}", ".".join(parts[:depth]))


def merge(base: Any, over: Any) -> Any:
    """Deep-merge mapping ``over`` onto ``base`` (``over`` wins; an explicit null replaces)."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def _merge_interfaces(raw: dict) -> None:
    """Give every agent-to-agent edge the scenario-wide interface, overlaid by its own keys."""
    default = raw.get("interface") or {}
    edges = raw.get("edges")
    if not isinstance(edges, list):
        return
    for i, e in enumerate(edges):
        if not isinstance(e, dict) or not isinstance(e.get("src"), str) or not isinstance(e.get("dst"), str):
            continue
        own = e.get("interface")
        if is_port(e["src"]) or is_port(e["dst"]):
            if own is not None:
                raise ScenarioError("'interface' applies only to agent-to-agent edges, not to task ports",
                                    f"edges.{i}.interface")
            continue
        if own is not None and not isinstance(own, dict):
            raise ScenarioError(f"expected a mapping, got {own!r}", f"edges.{i}.interface")
        e["interface"] = merge(default, own or {})


def from_dict(raw: Any, overrides: list[str] | tuple[str, ...] = (), file: str | None = None) -> Scenario:
    """Validate a scenario given as plain data; errors name ``file`` and the key path."""
    try:
        if raw is None:
            raise ScenarioError("the scenario is empty: it needs name, task, agents and edges")
        if not isinstance(raw, dict):
            raise ScenarioError(f"expected a mapping of top-level keys, got {type(raw).__name__}")
        raw = copy.deepcopy(raw)
        for item in overrides:
            apply_override(raw, *parse_override(item))
        _merge_interfaces(raw)
        scenario = build(Scenario, raw)
        graph_mod.build_graph(scenario)  # graph checks: unknown nodes, cycles, sizes
        return scenario
    except ScenarioError as e:
        raise (e.in_file(file) if file else e) from None


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read and validate a scenario file."""
    path = Path(path)
    if not path.is_file():
        hint = did_you_mean(path.name, [p.name for p in path.parent.glob("*.yaml")]) if path.parent.is_dir() else ""
        raise ScenarioError(f"no such scenario file{hint}", file=str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ScenarioError("not a UTF-8 text file", file=str(path)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise ScenarioError(f"malformed YAML, {where}{getattr(e, 'problem', e)}", file=str(path)) from None
    return from_dict(raw, overrides, file=str(path))


def dump(scenario: Scenario) -> str:
    """The resolved scenario as YAML: every default written out; loading it gives the same scenario."""
    return yaml.safe_dump(to_plain(scenario), sort_keys=False, default_flow_style=None)
