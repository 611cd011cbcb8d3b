"""Synthetic inputs (forward unlock) and composition (the corporation).

An edge with a synthetic input never makes its receiver wait; I's target is the real message for the same
batch id; evaluation composes the agents on real messages and, separately, on synthetic inputs only; bad
synthetic-input declarations are one-line errors naming the key path.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import chain

from corporation import Engine, ScenarioError, from_dict
from corporation.messages import Message
from corporation.tasks.base import Port
from corporation.tasks.classification import Classification

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["task.batch_size=128", "agents.l1.model.out=64", "agents.l2.model.out=64"]
# every agent-to-agent edge: DNI + a synthetic input I(x) (an MLP), latency 1 (complete unlock)
UNLOCK = ["interface.synthetic_input.context=task.x", "interface.synthetic_input.hidden=1",
          "interface.synthetic_input.width=64", "edges.1.latency=1", "edges.2.latency=1"]


def engine(overrides: list[str] = (), raw: dict[str, Any] | None = None) -> Engine:
    return Engine(from_dict(raw or chain(), list(overrides)))


def record_work(eng: Engine) -> dict[str, list[tuple[int, int]]]:
    """(tick, batch id processed) for every agent tick that did work."""
    log: dict[str, list[tuple[int, int]]] = {n: [] for n in eng.agents}
    for name, agent in eng.agents.items():
        def wrapped(tick, world, agent=agent, act=agent.act, name=name):
            did = act(tick, world)
            if did:
                log[name].append((tick, agent.last_id))
            return did
        agent.act = wrapped
    return log


def error(overrides: list[str], raw: dict[str, Any] | None = None) -> str:
    with pytest.raises(ScenarioError) as e:
        from_dict(raw or chain(), overrides)
    message = str(e.value)
    assert "\n" not in message, "errors are one line"
    return message


# ----- never waiting --------------------------------------------------------------------------------------
@pytest.mark.parametrize("slow", ["latency", "clock"])
def test_a_receiver_reading_a_synthetic_input_never_waits_for_its_sender(slow):
    """l2 is fed by a late (latency 3) or slow (period 3) sender; with I on that edge it processes the id
    of its own tick at every tick, never idles; without I it waits."""
    late = ["edges.1.latency=3"] if slow == "latency" else ["agents.l1.clock.period=3", "agents.l1.clock.phase=1"]
    eng = engine(late + ["edges.1.interface.synthetic_input.context=task.x"])
    log = record_work(eng)
    for _ in range(12):
        eng.step()
    l2 = eng.agents["l2"]
    assert log["l2"] == [(t, t) for t in range(12)], "batch t is processed at tick t"
    assert l2.counts["idle"] == 0
    assert l2.counts["synthetic_inputs"] == 12, "the real message was never there in time"
    assert log["l3"] == [(t, t) for t in range(12)], "downstream of the unlocked edge nobody waits either"

    control = engine(late)
    log = record_work(control)
    for _ in range(12):
        control.step()
    assert control.agents["l2"].counts["idle"] >= 3, "without I the receiver waits for its sender"
    assert all(i < t for t, i in log["l2"][1:]), "and works on old ids"


def test_the_stand_in_is_i_of_the_context_of_the_same_id():
    """What l2 reads at tick t (processing batch t, whose real message is late) is exactly I(x_t)."""
    eng = engine(["edges.1.latency=2", "edges.1.interface.synthetic_input.context=task.x"])
    link, l2 = eng.links[("l1", "l2")], eng.agents["l2"]
    events: list[tuple] = []
    si_forward, body_forward = link.si.forward, l2.body.forward

    def spy_si(context):
        out = si_forward(context)
        events.append(("I", eng.tick, context, out.detach()))
        return out

    def spy_body(x):
        kind, tick, context, out = events[-1]
        assert kind == "I" and tick == eng.tick, "I was asked for this very input"
        assert torch.equal(context, eng.task.context("x", eng.tick)), "from the context of the same id"
        assert torch.equal(x, out), "and its prediction is what the body reads"
        events.append(("body", eng.tick))
        return body_forward(x)
    link.si.forward, l2.body.forward = spy_si, spy_body
    for _ in range(6):
        eng.step()
    assert sum(e[0] == "body" for e in events) == 6


def test_i_target_is_the_real_message_for_the_same_id():
    eng = engine(["edges.1.latency=2", "edges.1.interface.synthetic_input.context=task.x"])
    link = eng.links[("l1", "l2")]
    sent: dict[int, Message] = {}
    send = eng.send

    def spy_send(lnk, msg, tick):
        if lnk is link:
            sent[msg.batch_id] = msg
        return send(lnk, msg, tick)
    eng.send = spy_send
    delivered: list[Message] = []
    deliver = link.deliver

    def spy_deliver(msg):
        delivered.append(msg)
        return deliver(msg)
    link.deliver = spy_deliver
    calls: list[tuple[int, torch.Tensor, torch.Tensor, int]] = []
    train_on = link.si.train_on

    def spy_train(context, h, age):
        msg = delivered[-1]  # the message whose arrival triggers this training step
        assert h is sent[msg.batch_id].h, "I regresses on the real message l1 sent for that id"
        assert torch.equal(context, eng.task.context("x", msg.batch_id)), "context of the SAME id"
        calls.append((msg.batch_id, context, h, age))
        return train_on(context, h, age)
    link.si.train_on = spy_train
    for _ in range(10):
        eng.step()
    assert [c[0] for c in calls] == list(range(8)), "one step per real message, in id order"
    assert all(c[3] == 2 for c in calls), "the target's age is the edge latency"


def test_i_learns_to_predict_the_message_and_fails_without_its_optimizer():
    def si_losses(extra: list[str]) -> tuple[float, float, float]:
        eng = engine(SMALL + UNLOCK + ["interface.context=task.y"] + extra)
        for _ in range(10):
            eng.step()
        first = eng.collect()["si/l1-l2/loss"]
        for _ in range(140):
            eng.step()
        last = eng.collect()
        return first, last["si/l1-l2/loss"], last["si/l1-l2/cosine"]

    first, last, cosine = si_losses([])
    assert last < 0.7 * first and cosine > 0.6, (first, last, cosine)
    first, last, cosine = si_losses(["interface.synthetic_input.optimizer={lr: 1.0e-9}"])
    assert not (last < 0.7 * first and cosine > 0.6), "a frozen I must fail the same check"


# ----- composition ------------------------------------------------------------------------------------------
def test_composition_uses_real_messages_and_the_synthetic_view_uses_i():
    eng = engine(SMALL + UNLOCK + ["interface.context=task.y"])
    for _ in range(20):
        eng.step()
    a = eng.agents
    mods = [m for ag in a.values() for m in ag.modules()]
    for m in mods:
        m.eval()
    x = eng.task.x_test[:50]
    with torch.no_grad():
        real = a["l3"].body(a["l2"].body(a["l1"].body(x)))
        i23 = eng.links[("l2", "l3")].si
        synthetic = a["l3"].body(i23(x))
        assert torch.allclose(eng.compose({"x": x})["y"], real)
        assert torch.allclose(eng.compose({"x": x}, synthetic=True)["y"], synthetic)
        for link in (eng.links[("l1", "l2")], eng.links[("l2", "l3")]):
            for p in link.si.parameters():
                p.add_(torch.randn_like(p))
        assert torch.allclose(eng.compose({"x": x})["y"], real), "scrambling I leaves the composition as is"
        assert not torch.allclose(eng.compose({"x": x}, synthetic=True)["y"], synthetic)
    for m in mods:
        m.train()
    metrics = eng.evaluate()
    assert {"test/accuracy", "test/synthetic_accuracy", "test/synthetic_loss"} <= set(metrics)
    assert "test/synthetic_accuracy" not in engine().evaluate(), "reported only when there is an I"


def test_fully_unlocked_cdni_composes_into_a_classifier():
    """Every layer forward- and update-unlocked (always reading I(x)); composed on real messages it must
    classify digits; breaking the synthetic gradient or I must break it."""
    def accuracy(extra: list[str]) -> dict[str, float]:
        eng = engine(SMALL + UNLOCK + ["interface.context=task.y"] + extra)
        for _ in range(200):
            eng.step()
        assert eng.agents["l3"].counts["synthetic_inputs"] == 200
        return eng.evaluate()

    good = accuracy([])  # seeds 0-2: 0.86-0.92 (synthetic view 0.84-0.88); broken: 0.58-0.67
    assert good["test/accuracy"] >= 0.8 and good["test/synthetic_accuracy"] >= 0.7, good
    assert accuracy(["interface.sg.scale=0"])["test/accuracy"] < 0.75, "no synthetic gradient: l1, l2 frozen"
    assert accuracy(["interface.synthetic_input.optimizer={lr: 1.0e-9}"])["test/accuracy"] < 0.75, "I frozen"


def test_agent_context_through_a_head_has_the_message_size():
    """I on l2 -> l3 predicted from l1's message to l3, which goes through a 16-unit head."""
    raw = chain()
    raw["agents"]["l1"]["heads"] = {"l3": {"out": 16}}
    raw["edges"].insert(2, {"src": "l1", "dst": "l3"})
    raw["edges"][3].update(latency=1, interface={"synthetic_input": {"context": "l1"}})
    eng = engine(raw=raw)
    assert eng.links[("l2", "l3")].si.net[0].in_features == 16
    for _ in range(4):
        eng.step()
    assert eng.agents["l3"].counts["synthetic_inputs"] == 4
    assert "si/l2-l3/loss" in eng.collect() and "test/synthetic_accuracy" in eng.evaluate()


# ----- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("edges.1.interface.synthetic_input.context=task.z",
     "edges.1.interface.synthetic_input.context: unknown context 'task.z'"),
    ("edges.1.interface.synthetic_input.context=l9", "edges.1.interface.synthetic_input.context: unknown context"),
    ("edges.1.interface.synthetic_input.context=l1",
     "edges.1.interface.synthetic_input.context: a synthetic input cannot be predicted from the message it"),
    ("edges.1.interface.synthetic_input.context=l2",
     "edges.1.interface.synthetic_input.context: a synthetic input cannot be predicted from its own receiver"),
    ("edges.2.interface.synthetic_input.context=l1",
     "edges.2.interface.synthetic_input.context: context agent 'l1' sends nothing to 'l3'"),
    ("edges.1.interface.synthetic_input.context=task.y",
     "edges.1.interface.synthetic_input.context: 'task.y' is a loss port"),
    ("edges.1.interface.synthetic_input.hidden=-1", "edges.1.interface.synthetic_input.hidden: must be >= 0"),
    ("edges.1.interface.synthetic_input.width=0", "edges.1.interface.synthetic_input.width: must be > 0"),
])
def test_bad_synthetic_inputs_are_one_line_errors(override, expected):
    assert expected in error(["edges.1.interface.synthetic_input.context=task.x", override])


def test_backprop_edge_with_a_synthetic_input_is_an_error():
    assert "needs a 'dni' interface" in error(["edges.1.interface.kind=backprop",
                                               "edges.1.interface.synthetic_input.context=task.x"])


def test_context_port_whose_size_cannot_match_is_an_error(monkeypatch):
    """A task port with no context form (size 0) cannot feed I."""
    ports = Classification.ports.__func__

    def no_context(cls, params):
        out = ports(cls, params)
        out["x"] = Port("x", "input", out["x"].size, 0)
        return out
    monkeypatch.setattr(Classification, "ports", classmethod(no_context))
    assert "edges.1.interface.synthetic_input.context: port 'task.x' has no context form" in error(
        ["edges.1.interface.synthetic_input.context=task.x"])


def test_cli_validate_reports_a_bad_context_in_one_line(tmp_path):
    text = (ROOT / "scenarios" / "corporation.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("synthetic_input: {context: task.x", "synthetic_input: {context: task.xx"))
    r = subprocess.run([sys.executable, "-m", "corporation", "validate", str(bad)], cwd=ROOT,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "synthetic_input.context: unknown context 'task.xx', did you mean 'task.x'" \
        in lines[0], r.stderr


def test_shipped_unlock_scenarios_are_what_they_claim():
    from corporation import load

    corp = load(ROOT / "scenarios" / "corporation.yaml")
    for e in corp.edges[1:3]:
        assert e.interface.kind == "dni" and e.interface.context == "task.y"
        assert e.interface.synthetic_input.context == "task.x" and e.latency >= 1, "forward-unlocked"
    asyn = load(ROOT / "scenarios" / "async_updates.yaml")
    assert all(a.update.prob == 0.2 for a in asyn.agents.values())
