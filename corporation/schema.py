"""Typed conversion of plain YAML data into the scenario dataclasses, with errors that name the key path.

Rules: unknown keys are errors (with a did-you-mean), missing required keys are errors, values are checked
against the field's type hint. A field whose metadata names a ``registry`` takes a ``{kind: ..., ...}``
mapping and is typed by that kind's params dataclass (so every model/task/synthesizer documents its keys).
A dataclass may define ``check(self, path)`` to validate values; it raises :class:`ScenarioError`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, Literal, Union

from .errors import ScenarioError, did_you_mean, short

INT_MAX = 2**63 - 1  # any integer in a scenario fits in 64 bits (torch and numpy need it)


def _join(path: str, key: str | int) -> str:
    """``path.key`` (a long user key is cut, so an error never quotes a huge name)."""
    key = str(key)
    if len(key) > 80:
        key = key[:77] + "..."
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


@functools.cache
def _schema(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """A dataclass's resolved type hints and init fields (cached: resolving hints is slow)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls) if f.init}


def build(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from mapping ``data`` (None means all defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"expected a mapping of keys, got {type(data).__name__} {short(data)}", path)
    hints, fields = _schema(cls)
    for key in data:
        if key not in fields:
            raise ScenarioError(f"unknown key {_key(key)}{did_you_mean(key, fields)}", path)
    kwargs = {}
    for name, f in fields.items():
        sub = _join(path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ScenarioError(f"missing required key '{name}'", path)
            continue
        registry = f.metadata.get("registry")
        if registry is not None:
            kwargs[name] = build_kind(registry, data[name], sub, f.metadata.get("default_kind"))
        else:
            kwargs[name] = convert(hints[name], data[name], sub)
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check(path)
    return obj


def build_kind(registry: Any, data: Any, path: str, default_kind: str | None = None) -> Any:
    """Build a ``{kind: name, ...}`` mapping with the params dataclass registered for ``name``."""
    if data is None and default_kind:
        data = {}
    if data is None:
        raise ScenarioError(f"expected a mapping with a 'kind' key (one of: {', '.join(registry.names())}), got null",
                            path)
    if isinstance(data, str):
        data = {"kind": data}
    if not isinstance(data, dict):
        raise ScenarioError(f"expected a mapping with a 'kind' key, got {short(data)}", path)
    if "kind" not in data and default_kind:
        data = {"kind": default_kind, **data}
    if "kind" not in data:
        raise ScenarioError(f"missing required key 'kind' (one of: {', '.join(registry.names())})", path)
    kind = data["kind"]
    if not isinstance(kind, str):
        raise ScenarioError(f"expected the name of a {registry.what} (one of: {', '.join(registry.names())}), "
                            f"got {short(kind)}", _join(path, "kind"))
    if kind not in registry:
        raise ScenarioError(f"unknown {registry.what} {_key(kind)}{did_you_mean(kind, registry.names())}",
                            _join(path, "kind"))
    return build(registry.get(kind).params, data, path)


def convert(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against type hint ``tp`` and convert it (int -> float, nested dataclasses)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, path)
            except ScenarioError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise ScenarioError(f"expected {_type_name(tp)}, got {short(value)}", path)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ScenarioError(f"expected one of {', '.join(map(str, allowed))}, got {short(value)}"
                                f"{did_you_mean(value, allowed) if isinstance(value, str) else ''}", path)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ScenarioError(f"expected {_type_name(tp)}, got {short(value)}", path)
        (item,) = typing.get_args(tp)
        return [convert(item, v, _join(path, i)) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ScenarioError(f"expected a mapping, got {short(value)}", path)
        _, item = typing.get_args(tp)
        out = {}
        for k, v in value.items():
            if str(k) in out:
                raise ScenarioError(f"key {_key(k)} appears twice (once as a number or null): name it once", path)
            out[str(k)] = convert(item, v, _join(path, k))
        return out
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ScenarioError(f"expected true or false, got {short(value)}", path)
        return value
    if tp is int:
        return _integer(value, path)
    if tp is float:
        return _number(value, path)
    if tp is str:
        if not isinstance(value, str):
            raise ScenarioError(f"expected a string, got {short(value)}", path)
        return value
    raise TypeError(f"schema: unsupported type {tp!r} at {path}")


def _key(key: Any) -> str:
    """A mapping key quoted for an error message (cut when long)."""
    text = str(key)
    return f"'{text}'" if len(text) <= 80 else short(text, 80)


def _integer(value: Any, path: str) -> int:
    """An int within 64 bits (a float such as 1e6 is refused with the integer to write instead)."""
    if isinstance(value, bool) or not isinstance(value, int):
        hint = ""
        if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) <= INT_MAX:
            hint = f" (write {int(value)})"
        raise ScenarioError(f"expected an integer, got {short(value)}{hint}", path)
    if abs(value) > INT_MAX:
        raise ScenarioError(f"integer out of range (at most {INT_MAX:_} in size), got {short(value, 40)}", path)
    return value


def _number(value: Any, path: str) -> float:
    """A finite float (an int is converted); .inf, .nan and numbers beyond float range are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"expected a number, got {short(value)}", path)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ScenarioError(f"expected a finite number, got {short(value, 40)} (.inf and .nan are not allowed)",
                            path)
    return number


def to_plain(obj: Any) -> Any:
    """Dataclasses -> plain dicts/lists, for writing the resolved scenario."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    return obj


def _num(value: float) -> str:
    """A number for an error message: ints with digit groups (1_000_000), floats short."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:_}" if abs(value) < 10**40 else short(value, 40)
    return f"{value:g}"


def at_most(value: float | None, limit: float, path: str, key: str, why: str = "") -> None:
    """Raise unless ``value`` <= ``limit`` (a documented limit, docs/scenario.md "Limits"); None passes."""
    if value is not None and value > limit:
        raise ScenarioError(f"must be <= {_num(limit)}{f' ({why})' if why else ''}, got {_num(value)}",
                            _join(path, key))


def within(value: int | None, low: int, high: int, path: str, key: str, why: str = "") -> None:
    """Raise unless ``low`` <= ``value`` <= ``high``; None passes."""
    if value is None:
        return
    if value < low:
        raise ScenarioError(f"must be >= {low}{f' ({why})' if why else ''}, got {_num(value)}", _join(path, key))
    at_most(value, high, path, key, why)


def positive(value: float | None, path: str, key: str, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is positive (or zero when allowed); None passes."""
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise ScenarioError(f"must be {need}, got {value}", _join(path, key))
