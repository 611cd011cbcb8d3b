"""``show`` prints what will actually happen: the schedule worked out from the scenario alone matches the
engine's trace (who processes which batch at which tick, who waits, which components update)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import chain

from corporation import Engine, from_dict, load
from corporation.graph import build_graph
from corporation.schedule import simulate

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("golden_record", ROOT / "tests" / "golden" / "record.py")
golden = sys.modules.get("golden_record") or importlib.util.module_from_spec(spec)
if "golden_record" not in sys.modules:
    sys.modules["golden_record"] = golden
    spec.loader.exec_module(golden)

TICKS = 40


def compare(scenario) -> None:
    events = []
    eng = Engine(scenario, trace=events.append)
    for _ in range(TICKS):
        eng.step()
    plan = simulate(scenario, build_graph(scenario), TICKS)
    for name, rows in plan.items():
        acted = [(e.tick, e.batch_id) for e in events if e.kind == "act" and e.where == name]
        assert [(t, x.acted) for t, x in enumerate(rows) if x.acted is not None] == acted, name
        updated = [e.tick for e in events if e.kind in ("update", "skip") and e.where == name]
        assert [t for t, x in enumerate(rows) if x.updated] == updated, name
        idle = [e.tick for e in events if e.kind == "idle" and e.where == name]
        assert [t for t, x in enumerate(rows) if x.fired and x.acted is None] == idle, name


@pytest.mark.parametrize("name", list(golden.CASES))
def test_the_schedule_of_every_shipped_scenario_is_what_the_engine_does(name):
    compare(load(ROOT / "scenarios" / f"{name}.yaml", [*golden.COMMON, *golden.CASES[name]]))


@pytest.mark.parametrize("sets", [
    ["edges.1.latency=2"],
    ["agents.l2.clock.period=3", "agents.l2.clock.phase=1", "edges.1.hold=true"],
    ["agents.l1.clock.period=2", "edges.0.sample=true", "agents.l3.update.unroll=3"],
    ["edges.1.latency=2", "edges.1.interface.synthetic_input.context=task.x", "agents.l2.clock.period=2",
     "edges.1.sample=true", "edges.2.latency=1"],
    ["interface.kind=backprop", "edges.2.latency=1", "agents.l1.update.unroll=2"],
])
def test_the_schedule_matches_on_clocks_latencies_and_unlocks(sets):
    compare(from_dict(chain(), sets))


def test_show_marks_waiting_ticks(tmp_path, capsys):
    import yaml

    from corporation.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(chain()))
    assert main(["show", str(path), "--set", "edges.1.latency=2", "--ticks", "6"]) == 0
    assert "l2  iiUUUU" in capsys.readouterr().out
