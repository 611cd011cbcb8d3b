"""Synthetic inputs (forward unlock) and composition (the corporation).

An edge with a synthetic input never makes its receiver wait; I's target is the real message for the same
batch id; evaluation composes the agents on real messages and, separately, on synthetic inputs only; bad
synthetic-input declarations are one-line errors naming the key path.
"""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import chain

from corporation import Engine, Event, ScenarioError, from_dict
from corporation.tasks.base import Port
from corporation.tasks.classification import Classification

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["task.batch_size=128", "agents.l1.model.out=64", "agents.l2.model.out=64"]
# every agent-to-agent edge: DNI + a synthetic input I(x) (an MLP), latency 1 (complete unlock)
UNLOCK = ["interface.synthetic_input.context=task.x", "interface.synthetic_input.hidden=1",
          "interface.synthetic_input.width=64", "edges.1.latency=1", "edges.2.latency=1"]


def engine(overrides: list[str] = (), raw: dict[str, Any] | None = None, trace=None) -> Engine:
    return Engine(from_dict(raw or chain(), list(overrides)), trace=trace)


def work(events: list[Event]) -> dict[str, list[tuple[int, int]]]:
    """(tick, batch id processed) for every agent tick that did work (the trace's ``act`` events)."""
    log: dict[str, list[tuple[int, int]]] = {}
    for e in events:
        if e.kind == "act":
            log.setdefault(e.where, []).append((e.tick, e.batch_id))
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
    # a slow l1 must sample the task's images (or its inbox would grow without end): it then processes id t
    # at tick t (t = 1, 4, 7, 10) and sends it at once, so l2 has the real message at those ticks only
    late = ["edges.1.latency=3"] if slow == "latency" else ["agents.l1.clock.period=3", "agents.l1.clock.phase=1",
                                                            "edges.0.sample=true"]
    real = [] if slow == "latency" else [1, 4, 7, 10]  # the ticks at which l1's message for id t is there
    events: list[Event] = []
    eng = engine(late + ["edges.1.interface.synthetic_input.context=task.x"], trace=events.append)
    for _ in range(12):
        eng.step()
    l2, log = eng.agents["l2"], work(events)
    assert log["l2"] == [(t, t) for t in range(12)], "batch t is processed at tick t"
    assert not any(e.kind == "idle" and e.where == "l2" for e in events) and l2.counts["idle"] == 0
    assert l2.counts["synthetic_inputs"] == 12 - len(real), "the real message was there in time only then"
    reads = [(e.tick, e.value["l1-l2"]) for e in events if e.kind == "act" and e.where == "l2"]
    assert [t for t, m in reads if m is None] == [t for t in range(12) if t not in real], "I stood in"
    assert all(m.batch_id == t for t, m in reads if m is not None), "else l2 read the real message of id t"
    assert log["l3"] == [(t, t) for t in range(12)], "downstream of the unlocked edge nobody waits either"

    events.clear()
    control = engine(late, trace=events.append)
    for _ in range(12):
        control.step()
    log = work(events)
    assert control.agents["l2"].counts["idle"] >= 3, "without I the receiver waits for its sender"
    assert sum(e.kind == "idle" and e.where == "l2" for e in events) >= 3
    if slow == "latency":
        assert all(i < t for t, i in log["l2"][1:]), "and works on old ids"
    else:
        assert log["l2"] == [(t, t) for t in real], "and works only when its slow sender has sent"


def test_the_stand_in_is_i_of_the_context_of_the_same_id():
    """What l2 reads at tick t (processing batch t, whose real message is late) is exactly I(x_t): the trace's
    ``stand_in`` event gives I's context and prediction, and l2's output equals its body on that prediction."""
    checked: list[int] = []
    eng: Engine

    def on_event(e: Event) -> None:
        if e.kind == "stand_in" and e.where == "l1-l2":
            context, h_hat = e.value
            assert e.batch_id == e.tick, "l2 processes batch t at tick t"
            assert torch.equal(context, eng.task.context("x", e.tick)), "I's context is that of the same id"
            with torch.no_grad():
                assert torch.equal(h_hat, si(context)), "the stand-in is I's prediction"
            body = copy.deepcopy(l2.body)  # train mode, as in the act; the copy's BN statistics do not matter
            with torch.no_grad():
                pending[e.tick] = l2.project("l3", body(h_hat))
        if e.kind == "send" and e.where == "l2-l3":
            assert torch.allclose(e.value.h, pending.pop(e.tick), atol=1e-6), "the body read the stand-in"
            checked.append(e.tick)

    pending: dict[int, torch.Tensor] = {}
    trace: list[Event] = []
    eng = engine(["edges.1.latency=2", "edges.1.interface.synthetic_input.context=task.x"],
                 trace=lambda e: (trace.append(e), on_event(e)))
    si, l2 = eng.edge("l1", "l2")[1].si, eng.agents["l2"]
    for _ in range(6):
        eng.step()
    assert checked == list(range(6))
    acts = [(e.tick, e.batch_id, e.value["l1-l2"]) for e in trace if e.kind == "act" and e.where == "l2"]
    assert acts == [(t, t, None) for t in range(6)], "l2 processed batch t at tick t, with I standing in"


def test_i_target_is_the_real_message_for_the_same_id():
    """Each real message l1 sends trains I once, on its arrival: the target is that very message, the
    context that of the same id, the age the edge latency (the trace's send, train_i and deliver events)."""
    log: list[tuple] = []  # in the order things happen: ("send" | "train_i" | "deliver", value, tick)
    images: dict[int, torch.Tensor] = {}  # batch id -> the task's x for it (what l1 read)

    def on_event(e: Event) -> None:
        if e.kind in ("send", "deliver", "train_i") and e.where == "l1-l2":
            log.append((e.kind, e.value, e.tick))
        if e.kind == "deliver" and e.where == "task.x-l1":
            images[e.batch_id] = e.value.h

    eng = engine(["edges.1.latency=2", "edges.1.interface.synthetic_input.context=task.x"], trace=on_event)
    for _ in range(10):
        eng.step()
    sent = {m.batch_id: m for kind, m, _ in log if kind == "send"}
    assert sorted(sent) == list(range(10))
    trains = [i for i, (kind, _, _) in enumerate(log) if kind == "train_i"]
    assert len(trains) == 8, "one step per real message delivered (ids 0-7 arrive by tick 9)"
    ids = []
    for i in trains:
        (context, h, age), tick = log[i][1], log[i][2]
        kind, msg, delivered = log[i + 1]  # the delivery this training step belongs to (traced after it)
        assert kind == "deliver" and delivered == tick
        assert h is sent[msg.batch_id].h, "I regresses on the real message l1 sent for that id"
        assert torch.equal(context, images[msg.batch_id]), "context of the SAME id"
        assert age == 2 == tick - msg.sent, "the target's age is the edge latency"
        ids.append(msg.batch_id)
    assert ids == list(range(8)), "in id order"
    assert [m.batch_id for kind, m, _ in log if kind == "deliver"] == ids, "and no delivery without one"


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
        i12, i23 = eng.edge("l1", "l2")[1].si, eng.edge("l2", "l3")[1].si
        synthetic = a["l3"].body(i23(x))
        assert torch.allclose(eng.compose({"x": x})["y"], real)
        assert torch.allclose(eng.compose({"x": x}, synthetic=True)["y"], synthetic)
        for si in (i12, i23):
            for p in si.parameters():
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
    assert eng.edge("l2", "l3")[1].si.net[0].in_features == 16
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
