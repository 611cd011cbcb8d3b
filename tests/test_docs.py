"""docs/scenario.md documents every key: the spec dataclasses' fields in their sections, and every field of
every built-in registered kind (models, tasks, synthesizers), found by introspecting the registries."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import corporation  # noqa: F401  (registers the built-in kinds)
from corporation.registry import MODELS, SYNTHESIZERS, TASKS
from corporation.spec import (
    AgentSpec,
    ClockSpec,
    EdgeSpec,
    EngineSpec,
    HeadSpec,
    InterfaceSpec,
    OptimizerSpec,
    Scenario,
    StateSpec,
    SyntheticInputSpec,
    TrainSpec,
    UpdateSpec,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "scenario.md"


def sections() -> dict[str, str]:
    """``{'Top level': text, ...}`` by ``##`` heading."""
    parts = re.split(r"^## (.+)$", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def blocks(text: str) -> list[tuple[str, str]]:
    """(head, body) of every table row (head: its first cell) and paragraph (head: its text up to the first
    colon that follows a closing parenthesis or a backtick)."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        rows = [line for line in para.splitlines() if line.startswith("|")]
        for row in rows:
            cells = row.split(" | ")
            out.append((cells[0], row))
        rest = " ".join(line for line in para.splitlines() if not line.startswith(("|", "#")))
        if rest.strip():
            head = re.split(r"(?<=[`)]):", rest, maxsplit=1)[0]
            out.append((head, rest))
    return out


def fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name != "kind"]


def documented(text: str, path: str) -> bool:
    """``path`` (``a`` or ``a.b``) heads a row (``a``, or ``a.`` sub-keys), or ``b: ...`` is inline in ``a``'s row."""
    rows = blocks(text)
    if any(f"`{path}`" in head or f"`{path}." in head for head, _ in rows):
        return True
    parent, _, key = path.rpartition(".")
    return bool(parent) and any(f"`{parent}`" in head and re.search(rf"[{{ ,`]{key}: ", body) for head, body in rows)


SPEC = [("Top level", Scenario, ""), ("Agents", AgentSpec, ""), ("Agents", OptimizerSpec, "optimizer."),
        ("Agents", ClockSpec, "clock."), ("Agents", UpdateSpec, "update."), ("Agents", StateSpec, "state."),
        ("Agents", HeadSpec, "heads."), ("Edges", EdgeSpec, ""), ("Interfaces", InterfaceSpec, ""),
        ("Interfaces", SyntheticInputSpec, "synthetic_input."), ("Train", TrainSpec, ""),
        ("Engine", EngineSpec, "engine.")]


@pytest.mark.parametrize("section,cls,prefix", SPEC, ids=[f"{s}:{c.__name__}" for s, c, _ in SPEC])
def test_every_spec_key_is_documented_in_its_section(section, cls, prefix):
    text = sections()[section]
    missing = [prefix + k for k in fields(cls) if not documented(text, prefix + k)]
    assert not missing, f"docs/scenario.md '## {section}' does not document {missing}"


def test_the_top_level_documents_imports():
    assert documented(sections()["Top level"], "imports")


def built_in(registry) -> list[str]:
    return [n for n in registry.names() if registry.get(n).params is not None
            and getattr(registry.get(n).factory, "__module__", "").startswith("corporation.")]


KINDS = [(r, n) for r in (MODELS, TASKS) for n in built_in(r)]


@pytest.mark.parametrize("registry,kind", KINDS, ids=[f"{r.what}:{n}" for r, n in KINDS])
def test_every_key_of_every_registered_kind_is_documented(registry, kind):
    text = sections()["Agents" if registry is MODELS else "Tasks"]
    found = [body for head, body in blocks(text) if f"`{kind}`" in head]
    assert found, f"docs/scenario.md documents no {registry.what} '{kind}'"
    params = registry.get(kind).params
    missing = [k for k in fields(params) if not any(re.search(rf"`{re.escape(k)}(: |`)", b) for b in found)]
    assert not missing, f"docs/scenario.md: {registry.what} '{kind}' keys {missing} are undocumented"


@pytest.mark.parametrize("kind", built_in(SYNTHESIZERS))
def test_every_synthesizer_key_is_documented(kind):
    text = sections()["Interfaces"]
    missing = [f"sg.{k}" for k in fields(SYNTHESIZERS.get(kind).params) if not documented(text, f"sg.{k}")]
    assert not missing, f"docs/scenario.md '## Interfaces' does not document {missing}"


def test_the_check_fails_on_an_undocumented_key():
    assert not documented("| key | default |\n|---|---|\n| `ticks` | `1` |\n", "eval_every")
    assert not documented("| `heads` | `{dst: {out: N}}` |\n", "heads.size")
    assert documented("| `heads` | `{dst: {out: N}}` |\n", "heads.out")
