"""The seams: clocks that keep up (a slow receiver is refused with the fix, and the fix trains), cycles through
delayed edges that train and evaluate, per-agent devices, the trace, and a final table without stale metrics."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import chain

from corporation import Engine, ScenarioError, from_dict
from corporation.cli import main


def test_a_receiver_slower_than_its_input_is_refused_with_the_fix():
    with pytest.raises(ScenarioError) as e:
        from_dict(chain(), ["agents.l1.clock.period=2"])  # task.x is emitted every tick
    msg = str(e.value)
    assert "edges.0" in msg and "'l1' acts every 2 ticks" in msg and "sample: true" in msg and "hold: true" in msg
    with pytest.raises(ScenarioError, match="edges.1"):  # between agents too
        from_dict(chain(), ["agents.l2.clock.period=3"])
    from_dict(chain(), ["agents.l1.clock.period=2", "agents.l2.clock.period=2", "agents.l3.clock.period=2",
                        "edges.0.sample=true"])  # every agent at the rate of what it reads: fine


@pytest.mark.parametrize("fix", ["sample", "hold"])
def test_with_the_fix_the_slow_receiver_trains_and_every_m_gets_targets(fix):
    events = []
    raw = from_dict(chain(), ["agents.l1.clock.period=2", f"edges.0.{fix}=true", "train.log_every=20",
                              "train.eval_every=60", "interface.context=task.y"])
    eng = Engine(raw, trace=events.append)
    records = []
    eng.run(ticks=120, on_log=records.append)
    l1_reads = [e.batch_id for e in events if e.kind == "act" and e.where == "l1"]
    assert l1_reads == list(range(0, 120, 2)), "l1 processes the batch of its own tick, no backlog"
    for record in records:  # every M keeps receiving targets, in every log window
        for edge in ("l1-l2", "l2-l3"):
            assert f"sg/{edge}/loss" in record, (record["tick"], edge)
    late = [e for e in events if e.kind == "target" and e.where == "l1-l2" and e.tick >= 100]
    assert len(late) == 10
    assert records[-1]["test/accuracy"] > 0.5


def two_agent_cycle() -> dict:
    """a0 reads the image and a1's message of the tick before; a1 reads a0's message of the tick before and
    answers on task.y: a cycle through two latency-1 edges, both DNI."""
    raw = chain()
    raw["agents"] = {"a0": {"model": {"kind": "mlp", "out": 32}},
                     "a1": {"model": {"kind": "mlp", "hidden": [32], "out": 32},
                            "heads": {"task.y": {}, "a0": {"out": 8}}}}
    raw["edges"] = [{"src": "task.x", "dst": "a0"}, {"src": "a0", "dst": "a1", "latency": 1},
                    {"src": "a1", "dst": "a0", "latency": 1}, {"src": "a1", "dst": "task.y"}]
    return raw


def test_a_two_agent_cycle_through_latency_1_edges_trains_and_evaluates():
    events = []
    eng = Engine(from_dict(two_agent_cycle(), ["train.eval_every=300"]), trace=events.append)
    first = eng.evaluate()["test/accuracy"]
    last = eng.run(ticks=300)
    assert last["train/a0/idle"] == 0 and last["train/a1/idle"] == 1  # a1 waits one tick for a0's message
    targets = {e.where for e in events if e.kind == "target"}
    assert targets == {"a0-a1", "a1-a0"}, "both Ms are trained"
    assert last["test/accuracy"] >= 0.45 and last["test/accuracy"] > first + 0.3, (first, last)  # seen: 0.61
    broken = Engine(from_dict(two_agent_cycle(), ["agents.a1.optimizer.lr=1.0e-12", "agents.a0.optimizer.lr=1.0e-12"]))
    assert broken.run(ticks=300)["test/accuracy"] < 0.3, "without learning the same check fails"


def test_the_trace_records_what_happens(tmp_path):
    events = []
    eng = Engine(from_dict(chain(), ["edges.1.latency=2"]), trace=events.append)
    for _ in range(4):
        eng.step()
    kinds = {(e.kind, e.where) for e in events}
    assert {("emit", "task"), ("act", "l1"), ("send", "l1-l2"), ("deliver", "l1-l2"), ("idle", "l2"),
            ("update", "l3"), ("target", "l2-l3")} <= kinds
    sent = {e.batch_id: e.tick for e in events if e.kind == "send" and e.where == "l1-l2"}
    delivered = {e.batch_id: e.tick for e in events if e.kind == "deliver" and e.where == "l1-l2"}
    assert all(delivered[b] == sent[b] + 2 for b in delivered) and delivered


def test_final_table_has_no_stale_metrics(tmp_path):
    """l2 never updates (p_update 0), so l1's M never receives a target: its sg metrics are absent from every
    record, and so from the final table, while l2's M (trained from l3) is there."""
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(chain()))
    out = tmp_path / "r"
    assert main(["run", str(f), "--out", str(out), "--quiet", "--set", "train.ticks=20", "--set",
                 "agents.l2.update.prob=0", "--set", "train.log_every=5"]) == 0
    final = json.loads((out / "summary.json").read_text())["final"]
    assert "sg/l2-l3/loss" in final and not any(k.startswith("sg/l1-l2/") for k in final)
    assert "test/accuracy" in final


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (runs when one is present)")
def test_one_agent_on_another_device():
    eng = Engine(from_dict(chain(), ["device=cpu", "agents.l2.device=cuda"]))
    assert next(eng.agents["l2"].body.parameters()).device.type == "cuda"
    assert next(eng.agents["l1"].body.parameters()).device.type == "cpu"
    for _ in range(20):
        eng.step()
    assert 0 <= eng.evaluate()["test/accuracy"] <= 1


def test_an_unavailable_agent_device_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(Exception, match="CUDA is not available"):
        Engine(from_dict(chain(), ["agents.l2.device=cuda"]))
    with pytest.raises(ScenarioError, match="agents.l2.device"):
        from_dict(chain(), ["agents.l2.device=tpu"])


def test_placement_keeps_components_whole_and_cross_worker_edges_delayed():
    from corporation.graph import build_graph
    from corporation.placement import place

    s = from_dict(chain(), ["edges.2.interface.kind=backprop"])  # {l2, l3} locked together
    g = build_graph(s)
    local = place(s, g)
    assert set(local.worker.values()) == {0} and local.device == {"l1": "cpu", "l2": "cpu", "l3": "cpu"}
    with pytest.raises(ScenarioError, match="share a worker"):
        place(s, g, workers=2, explicit={"l2": 0, "l3": 1})
    with pytest.raises(ScenarioError, match=r"edges.1.latency.*crosses workers"):
        place(s, g, workers=2, explicit={"l1": 1})
    s = from_dict(chain(), ["edges.2.interface.kind=backprop", "edges.1.latency=1"])
    assert place(s, build_graph(s), workers=2, explicit={"l1": 1}).agents_of(1) == ["l1"]


def test_a_hold_edge_trains_m_on_the_message_it_read():
    """l2 processes batch t (the newest of its two hold edges, from task.x) but reads l1's newest message,
    batch t - 2: the
    target that goes back to l1's M is for batch t - 2, the message it is the gradient of (it used to be
    posted for t, pairing a gradient with the wrong message)."""
    raw = chain()
    raw["edges"].insert(1, {"src": "task.x", "dst": "l2", "hold": True})
    events = []
    eng = Engine(from_dict(raw, ["edges.2.hold=true", "edges.2.latency=2"]), trace=events.append)
    for _ in range(8):
        eng.step()
    read = {e.tick: e.value["l1-l2"].batch_id for e in events if e.kind == "act" and e.where == "l2"
            and e.value["l1-l2"] is not None}
    targets = {e.tick: e.batch_id for e in events if e.kind == "target" and e.where == "l1-l2"}
    # the target comes back 2 ticks later (grad_latency = latency = 2)
    assert len(targets) == 4 and all(targets[t] == read[t - 2] == t - 4 for t in targets)
