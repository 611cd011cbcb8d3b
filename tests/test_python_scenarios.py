"""Scenarios written in Python (spec dataclasses, networkx graphs) mean what the same YAML file means: one
validation and merging path; the mlp output-agent default; exponent floats in files and --set."""
from __future__ import annotations

import networkx as nx
import pytest
import torch

from corporation import Engine, ScenarioError, from_graph, load, resolve
from corporation.cli import main
from corporation.models import MLPParams
from corporation.runner import run_scenario
from corporation.spec import AgentSpec, EdgeSpec, InterfaceSpec, OptimizerSpec, Scenario, TrainSpec
from corporation.tasks.classification import ClassificationParams

YAML = """
name: three_ways
seed: 3
device: cpu
task: {kind: classification, dataset: digits, batch_size: 64}
interface: {kind: dni, sg: {hidden: 0}, context: task.y}
agents:
  l1: {model: {kind: mlp, out: 32}, optimizer: {kind: adam, lr: 3e-3}}
  l2: {model: {kind: mlp, hidden: [16]}, optimizer: {kind: adam, lr: 3e-3}}
edges:
  - {src: task.x, dst: l1}
  - {src: l1, dst: l2, latency: 1}
  - {src: l2, dst: task.y}
train: {ticks: 30, eval_every: 30, progress: false}
"""


def from_dataclasses(name: str = "three_ways") -> Scenario:
    adam = OptimizerSpec(kind="adam", lr=3e-3)
    return Scenario(name=name, seed=3, device="cpu", task=ClassificationParams(batch_size=64),
                    interface=InterfaceSpec(kind="dni", sg={"hidden": 0}, context="task.y"),
                    agents={"l1": AgentSpec(model=MLPParams(out=32), optimizer=adam),
                            "l2": AgentSpec(model=MLPParams(hidden=[16]), optimizer=adam)},
                    edges=[EdgeSpec("task.x", "l1"), EdgeSpec("l1", "l2", latency=1), EdgeSpec("l2", "task.y")],
                    train=TrainSpec(ticks=30, eval_every=30, progress=False))


def from_networkx() -> Scenario:
    g = nx.DiGraph()  # edges are listed in g.edges order: by source node, in the order nodes were added
    g.add_edge("task.x", "l1")
    g.add_edge("l1", "l2", latency=1)
    g.add_edge("l2", "task.y")
    g.nodes["l1"].update(model={"kind": "mlp", "out": 32}, optimizer={"kind": "adam", "lr": 3e-3})
    g.nodes["l2"].update(model=MLPParams(hidden=[16]), optimizer=OptimizerSpec(lr=3e-3))
    return from_graph(g, task={"kind": "classification", "dataset": "digits", "batch_size": 64}, name="three_ways",
                      seed=3, device="cpu", interface={"kind": "dni", "sg": {"hidden": 0}, "context": "task.y"},
                      train={"ticks": 30, "eval_every": 30, "progress": False})


def records(scenario: Scenario) -> list[dict]:
    out: list[dict] = []
    Engine(scenario).run(on_log=out.append)
    return out


def test_the_same_scenario_three_ways_is_one_scenario_with_identical_metrics(tmp_path):
    path = tmp_path / "three_ways.yaml"
    path.write_text(YAML)
    ways = [load(path), resolve(from_dataclasses()), from_networkx()]
    assert ways[0] == ways[1] == ways[2]
    assert ways[1].edges[1].interface.context == "task.y"  # the default interface reached the edge
    runs = [records(s) for s in ways]
    assert runs[0] and runs[0][-1]["sg/l1-l2/loss"] > 0  # M trained: the sender learns through it
    assert runs[0] == runs[1] == runs[2]


def test_dataclass_scenarios_are_validated_like_files(tmp_path):
    with pytest.raises(ScenarioError, match=r"name: 'Bad Name!' must match \[a-z0-9_\]\+"):
        resolve(from_dataclasses("Bad Name!"))
    with pytest.raises(ScenarioError, match="Bad Name!"):
        run_scenario(from_dataclasses("Bad Name!"), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()
    bad = from_dataclasses()
    bad.edges.append(EdgeSpec("l2", "nobody"))
    with pytest.raises(ScenarioError, match="nobody"):
        resolve(bad)
    g = nx.DiGraph()
    g.add_node("task.x", size=3)
    with pytest.raises(ScenarioError, match=r"graph.nodes.task.x: a task port takes no attributes, got size"):
        from_graph(g, task={"kind": "classification"}, name="x")


def test_an_output_mlp_has_no_output_activation_unless_asked(tmp_path):
    s = from_networkx()
    assert s.agents["l1"].model.out_activation is True  # a hidden layer-agent: Linear -> ReLU
    assert s.agents["l2"].model.out_activation is False  # it feeds task.y only: its output is logits
    engine = Engine(s)
    x = torch.rand(50, 64)
    assert engine.compose({"x": x})["y"].min() < 0  # logits, not ReLU'd logits
    path = tmp_path / "asked.yaml"
    path.write_text(YAML.replace("hidden: [16]}", "hidden: [16], out_activation: true}"))
    assert load(path).agents["l2"].model.out_activation is True
    headed = YAML.replace("{kind: mlp, hidden: [16]}", "{kind: mlp, out: 16}, heads: {task.y: {}}")
    path.write_text(headed)
    assert load(path).agents["l2"].model.out_activation is True  # a head is the output layer then


def test_exponent_floats_in_files_and_in_set(tmp_path, capsys):
    path = tmp_path / "floats.yaml"
    path.write_text(YAML.replace("lr: 3e-3}}\n  l2", "lr: 1e-3}}\n  l2"))
    s = load(path, ["agents.l2.optimizer.lr=3e-4", "agents.l2.optimizer.weight_decay=1E-5"])
    assert s.agents["l1"].optimizer.lr == 1e-3 and s.agents["l2"].optimizer.lr == 3e-4
    assert s.agents["l2"].optimizer.weight_decay == 1e-5
    assert main(["validate", str(path), "--set", "agents.l1.optimizer.lr=-2e-3"]) == 2
    assert "agents.l1.optimizer.lr: must be > 0, got -0.002" in capsys.readouterr().err
