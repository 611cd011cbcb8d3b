"""Scenario files: YAML in, validated :class:`Scenario` out; ``--set`` overrides; the resolved copy.

IO lives here (reading files); the schema itself is in :mod:`corporation.spec`. The YAML reader is
PyYAML's safe loader made strict and bounded (:class:`ScenarioLoader`): ``3e-4`` is a float (as in YAML
1.2), a key given twice is an error, and nesting, aliases and the expanded size of a document are capped
(docs/scenario.md "Limits"), so no file can make validation hang or exhaust memory.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from . import graph as graph_mod
from . import plugins
from .errors import DataError, ScenarioError, did_you_mean, short
from .graph import Graph
from .schema import build, to_plain
from .spec import Scenario, is_port
from .tasks.files import FileProblem, read_file

MAX_FILE_BYTES = 10 * 2**20  # a scenario file
MAX_DEPTH = 50  # nesting of mappings and lists
MAX_ALIASES = 1_000  # alias uses (*name) in one document
MAX_NODES = 250_000  # values in a document once its aliases are expanded
MAX_KEY_PARTS = MAX_DEPTH  # parts of a --set key
FLOAT_TAG = "tag:yaml.org,2002:float"
EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class ScenarioLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, strict and bounded: exponent floats without a dot (``1e-3``), no duplicate keys,
    at most MAX_DEPTH levels of nesting and MAX_ALIASES alias uses."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise ComposerError(None, None, f"more than {MAX_ALIASES} alias uses (*name): write the values "
                                    "out or generate the scenario in Python", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels: flatten the file",
                                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base constructor explains it
                    continue
                if duplicate:
                    raise ConstructorError(None, None, f"duplicate key {short(key, 80)}: a mapping names each key "
                                           "once, remove one of them", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


ScenarioLoader.add_implicit_resolver(FLOAT_TAG, EXP_FLOAT, list("-+.0123456789"))


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error as 'line N: what is wrong' (one line)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    parts = [getattr(e, "context", None), getattr(e, "problem", None)]
    what = ", ".join(p for p in parts if p) or getattr(e, "reason", None) or str(e)
    return f"{where}{what}"


def parse_yaml(text: str) -> Any:
    """One YAML document with :class:`ScenarioLoader`; ScenarioError (no path) on any problem."""
    loader = None
    try:
        loader = ScenarioLoader(text)
        return loader.get_single_data()
    except yaml.reader.ReaderError as e:  # a control character, before any parsing
        line = text[: e.position].count("\n") + 1
        raise ScenarioError(f"malformed YAML, line {line}: unacceptable character #x{e.character:04x} ({e.reason}): "
                            "remove it") from None
    except yaml.YAMLError as e:
        raise ScenarioError(f"malformed YAML, {_yaml_problem(e)}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # a constructor refusing a value
        raise ScenarioError(f"malformed YAML: {type(e).__name__}: {short(str(e), 120)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def check_shape(raw: Any) -> None:
    """Refuse data nested deeper than MAX_DEPTH (or referring to itself) or larger than MAX_NODES values
    once shared parts (YAML aliases) are counted every time they are used. Stops as soon as a limit is hit."""
    stack = [(raw, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ScenarioError(f"the scenario expands to more than {MAX_NODES:_} values (aliases count every "
                                "time they are used): make it smaller")
        if depth > MAX_DEPTH:
            raise ScenarioError(f"nested deeper than {MAX_DEPTH} levels (or a value contains itself): flatten it")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.0.c=value`` -> (['a','b','0','c'], value parsed as a YAML scalar or flow list/map)."""
    if "=" not in item:
        raise ScenarioError(f"override {short(item)} must look like KEY=VALUE (e.g. interface.kind=backprop)",
                            "--set")
    key, _, text = item.partition("=")
    if not key or any(not part for part in key.split(".")):
        raise ScenarioError(f"override {short(item)} has an empty key part (write KEY=VALUE, e.g. "
                            "train.ticks=100)", "--set")
    if key.count(".") >= MAX_KEY_PARTS:
        raise ScenarioError(f"override key {short(key)} has more than {MAX_KEY_PARTS} parts", "--set")
    try:
        value = parse_yaml(text) if text.strip() else None
    except ScenarioError as e:
        raise ScenarioError(f"override {short(item)}: the value is not valid YAML ({e.raw}): write "
                            "a YAML value such as 3, 1e-3, null, [1, 2], {a: 1} or a string", "--set") from None
    return key.split("."), value


def apply_override(raw: dict, parts: list[str], value: Any) -> None:
    """Set ``raw[parts...] = value``, creating mappings on the way; list items are addressed by index."""
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not re.fullmatch(r"-?[0-9]{1,18}", part) or not -len(node) <= int(part) < len(node):
                which = f"use 0..{len(node) - 1}" if node else "the list is empty: set the whole list"
                raise ScenarioError(f"{short(part, 40)} is not an index of this list of {len(node)} items "
                                    f"({which})", where)
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
            raise ScenarioError(f"cannot set a key inside {short(node)} (it is not a mapping or a list)",
                                ".".join(parts[:depth]))


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
            raise ScenarioError(f"expected a mapping, got {short(own)}", f"edges.{i}.interface")
        e["interface"] = merge(default, own or {})


def _settle_defaults(scenario: Scenario) -> None:
    """Defaults that depend on the graph: a model whose params define ``settle_out_activation`` (``mlp``)
    learns whether it is an output agent: every out-edge goes to a task port, with no head on it."""
    for name, agent in scenario.agents.items():
        settle = getattr(agent.model, "settle_out_activation", None)
        if callable(settle):
            outs = [e.dst for e in scenario.edges if e.src == name]
            settle(bool(outs) and all(is_port(d) and d not in agent.heads for d in outs))


def check(raw: Any, overrides: list[str] | tuple[str, ...] = (),
          file: str | None = None, imports: list[str] | tuple[str, ...] = ()) -> tuple[Scenario, Graph]:
    """Validate a scenario given as plain data and build its graph; errors name ``file`` and the key path.
    ``imports``: plugin modules (``--import``) imported after the scenario's own ``imports`` and recorded
    with them (:mod:`corporation.plugins`).

    What could not be checked here (e.g. a size that needs data which is not installed) is listed in
    ``graph.unchecked``; :func:`from_dict` refuses such a scenario unless ``strict=False``."""
    try:
        if raw is None:
            raise ScenarioError("the scenario is empty: it needs name, task, agents and edges")
        if not isinstance(raw, dict):
            raise ScenarioError(f"expected a mapping of top-level keys (name, task, agents, edges, ...), got "
                                f"{type(raw).__name__}")
        check_shape(raw)
        raw = copy.deepcopy(raw)
        for item in overrides:
            apply_override(raw, *parse_override(item))
        check_shape(raw)
        names = plugins.check_names(raw.pop("imports", None), "imports")
        plugins.import_all(names)
        extra = [n for n in imports if n not in names]
        plugins.import_all(extra, flag=True)
        names += extra
        _merge_interfaces(raw)
        scenario = build(Scenario, raw)
        scenario.imports = names  # not a spec field (yet): kept beside it, written by dump()
        _settle_defaults(scenario)
        graph = graph_mod.build_graph(scenario)  # graph checks: unknown nodes, cycles, sizes, limits
        return scenario, graph
    except ScenarioError as e:
        raise (e.in_file(file) if file else e) from None
    except DataError as e:
        raise (e.in_file(file) if file else e) from None


def require_checked(graph: Graph, file: str | None = None) -> None:
    """Raise the error behind the first thing validation could not check (e.g. a corpus not installed)."""
    for port in graph.ports.values():
        if port.unchecked is not None:
            error = port.unchecked.error
            raise (error.in_file(file) if file and hasattr(error, "in_file") else error) from None


def from_dict(raw: Any, overrides: list[str] | tuple[str, ...] = (), file: str | None = None,
              strict: bool = True, imports: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Validate a scenario given as plain data; errors name ``file`` and the key path. ``strict``: also
    refuse what could not be checked (missing data), as a run must. ``imports``: plugin modules."""
    scenario, graph = check(raw, overrides, file, imports)
    if strict:
        require_checked(graph, file)
    return scenario


def read(path: str | Path) -> Any:
    """A scenario file's YAML data; one-line errors naming the file (missing, a folder, unreadable, too
    large, not UTF-8, malformed YAML, duplicate keys, too deep)."""
    path = Path(path)
    try:
        data = read_file(path, MAX_FILE_BYTES)
    except FileProblem as e:
        raise ScenarioError(f"{_file_problem(path, e)}", file=str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(f"not a UTF-8 text file (bad byte at offset {e.start}): save it as UTF-8",
                            file=str(path)) from None
    try:
        return parse_yaml(text)
    except ScenarioError as e:
        raise e.in_file(str(path)) from None


def _file_problem(path: Path, e: FileProblem) -> str:
    """The fix for a scenario file that cannot be read."""
    if e.missing:
        try:
            options = [p.name for p in path.parent.glob("*.yaml")] if path.parent.is_dir() else []
        except OSError:
            options = []
        return f"no such scenario file{did_you_mean(path.name, options)}"
    if e.reason.startswith("is a folder"):
        return "is a folder, not a scenario file: name a .yaml file"
    if "ermission" in e.reason:
        return f"scenario file {e.reason}: check its permissions"
    if e.reason.startswith("cannot be read"):
        return f"scenario file {e.reason}: name a readable file"
    return f"scenario file {e.reason}: name a YAML text file"


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = (), strict: bool = True,
         imports: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read and validate a scenario file (``strict``: as for a run, see :func:`from_dict`); ``imports``:
    plugin modules (``--import``)."""
    return from_dict(read(path), overrides, file=str(path), strict=strict, imports=imports)


def check_file(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
               imports: list[str] | tuple[str, ...] = ()) -> tuple[Scenario, list[str]]:
    """Read and validate a scenario file without requiring its data; also return what was not checked."""
    scenario, graph = check(read(path), overrides, file=str(path), imports=imports)
    return scenario, list(graph.unchecked)


def imports_of(scenario: Scenario) -> list[str]:
    """The plugin modules a scenario was validated with (its ``imports`` and ``--import``)."""
    return list(getattr(scenario, "imports", None) or [])


def plain(scenario: Scenario) -> dict[str, Any]:
    """The resolved scenario as plain data (every key, ``imports`` after ``device``)."""
    data = to_plain(scenario)
    out: dict[str, Any] = {}
    for k, v in data.items():
        out[k] = v
        if k == "device":
            out["imports"] = imports_of(scenario)
    return out


def dump(scenario: Scenario) -> str:
    """The resolved scenario as YAML: every default written out; loading it gives the same scenario."""
    return yaml.safe_dump(plain(scenario), sort_keys=False, default_flow_style=None)
