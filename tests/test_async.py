"""Asynchrony: stochastic updates (p_update), latencies for messages and gradients, clocks, staleness,
skipped and idle ticks, and the latency >= 1 independence property (what lets agents run in parallel)."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import chain

from corporation import Engine, ScenarioError, from_dict

SMALL = ["task.batch_size=128", "agents.l1.model.out=64", "agents.l2.model.out=64"]
AGENTS = ("l1", "l2", "l3")


def engine(overrides: list[str] = (), raw: dict[str, Any] | None = None) -> Engine:
    return Engine(from_dict(raw or chain(), list(overrides)))


def prob(p: float, agents: tuple[str, ...] = AGENTS) -> list[str]:
    return [f"agents.{a}.update.prob={p}" for a in agents]


def params(eng: Engine, name: str) -> list[torch.Tensor]:
    agent = eng.agents[name]
    return [p.detach().clone() for p in [*agent.body.parameters(), *agent.heads.parameters()]]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


# ----- p_update ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("unlocked", [False, True])
def test_p_update_zero_never_changes_the_agents_parameters(unlocked):
    extra = ["interface.synthetic_input.context=task.x", "edges.1.latency=1", "edges.2.latency=1"] if unlocked \
        else []
    eng = engine(["interface.context=task.y", "agents.l1.update.prob=0"] + extra)
    before = {n: params(eng, n) for n in AGENTS}
    for _ in range(30):
        eng.step()
    assert same(before["l1"], params(eng, "l1")), "p_update = 0: l1's parameters never change"
    assert not same(before["l2"], params(eng, "l2")) and not same(before["l3"], params(eng, "l3")), \
        "the others (p_update = 1) do learn"
    counts = eng.agents["l1"].counts
    assert counts["updates"] == 0 and counts["skipped"] == 30


def test_p_update_is_the_fraction_of_updates_and_seeded():
    def counts(seed: int) -> list[int]:
        eng = engine(prob(0.3), chain(seed=seed))
        for _ in range(200):
            eng.step()
        return [eng.agents[a].counts["updates"] for a in AGENTS]

    a = counts(0)
    assert all(40 <= n <= 80 for n in a), a  # 200 draws at p = 0.3: mean 60, sd 6.5
    assert len({*a}) > 1, "each agent draws from its own stream"
    assert counts(0) == a, "same seed, same draws"
    eng = engine(prob(0.3))
    for _ in range(50):
        eng.step()
    m = eng.collect()
    for n in AGENTS:
        assert m[f"train/{n}/updates"] + m[f"train/{n}/skipped"] == 50


def test_a_skipped_update_sends_no_target_upstream():
    eng = engine(["agents.l2.update.prob=0"])
    for _ in range(10):
        eng.step()
    assert eng.edge("l1", "l2")[0].sg.steps == 0, "l2 never ran a backward pass, so l1's M got no target"
    assert eng.edge("l2", "l3")[0].sg.steps == 10


def test_p_update_0_2_still_learns():
    def accuracy(p: float) -> float:
        eng = engine(SMALL + ["interface.context=task.y"] + prob(p))
        for _ in range(300):  # about 60 updates per agent at p = 0.2
            eng.step()
        return eng.evaluate()["test/accuracy"]

    assert accuracy(0.2) >= 0.75
    assert accuracy(0.0) < 0.3, "the same check fails when nothing updates"


# ----- latencies, staleness, idle ticks ---------------------------------------------------------------------
def test_staleness_metrics_are_the_ages_of_the_targets():
    """Message latency 2, gradient latency 3 on l1 -> l2. With I on that edge, l2 processes batch b at tick b,
    so M's target for b comes back at b + 3; without I, l2 processes b at b + 2 and the target comes at
    b + 5. I's target (the real message) is always 2 ticks old."""
    base = ["edges.1.latency=2", "edges.1.grad_latency=3"]
    eng = engine(base + ["edges.1.interface.synthetic_input.context=task.x"])
    for _ in range(12):
        eng.step()
    m = eng.collect()
    assert m["si/l1-l2/staleness"] == m["si/l1-l2/staleness_max"] == 2
    assert m["sg/l1-l2/staleness"] == m["sg/l1-l2/staleness_max"] == 3
    assert m["sg/l2-l3/staleness"] == 0
    eng = engine(base)
    for _ in range(12):
        eng.step()
    m = eng.collect()
    assert m["sg/l1-l2/staleness"] == m["sg/l1-l2/staleness_max"] == 5
    assert "si/l1-l2/loss" not in m


def test_idle_ticks_are_counted():
    """l1 acts every other tick; l2 (every tick, no synthetic input, no hold) has nothing new half the time."""
    eng = engine(["agents.l1.clock.period=2", "edges.0.sample=true"])  # l1 reads every other image
    for _ in range(10):
        eng.step()
    m = eng.collect()
    assert m["train/l2/idle"] == 5 and m["train/l2/updates"] == 5
    assert m["train/l1/idle"] == 0 and m["train/l1/updates"] == 5


# ----- the latency >= 1 independence property -------------------------------------------------------------
ALL_LATE = ["edges.0.latency=1", "edges.1.latency=1", "edges.2.latency=2", "edges.2.grad_latency=1",
            "interface.context=task.y"]


def run_in_order(overrides: list[str], shuffle: int | None, ticks: int = 15) -> tuple[dict, list]:
    """Run ``ticks``; with ``shuffle`` (a seed), the agents act, the components update and the targets train
    M in a random order at every tick (``Engine(shuffle=...)``). Returns the metrics and every parameter."""
    eng = Engine(from_dict(chain(), list(overrides)), shuffle=shuffle)
    for _ in range(ticks):
        eng.step()
    metrics = eng.collect()
    tensors = [p.detach().clone() for a in eng.agents.values() for m in a.modules() for p in m.parameters()]
    return metrics, tensors


@pytest.mark.parametrize("extra", [[], ["interface.synthetic_input.context=task.x"],
                                   ["agents.l2.clock.period=2", "agents.l3.clock.phase=1", "edges.1.hold=true"]])
def test_with_latency_at_least_1_the_order_of_agents_within_a_tick_does_not_matter(extra):
    """With latency >= 1 on every edge, an agent's work at tick t depends only on what was sent before t:
    running the agents of a tick in any order gives bit-identical results (so they can run in parallel)."""
    ref_metrics, ref_params = run_in_order(ALL_LATE + extra, None)
    for seed in (1, 2):
        metrics, tensors = run_in_order(ALL_LATE + extra, seed)
        assert metrics == ref_metrics
        assert same(tensors, ref_params)


def test_with_latency_0_the_order_matters():
    """The control: the same check must fail when an edge has latency 0 (the receiver reads this tick's
    message only if its sender ran first)."""
    late0 = [o for o in ALL_LATE if not o.startswith("edges.1.")]
    ref_metrics, ref_params = run_in_order(late0, None)
    outcomes = [run_in_order(late0, seed) for seed in (1, 2, 3)]
    assert any(m != ref_metrics or not same(t, ref_params) for m, t in outcomes)


def test_with_latency_at_least_1_every_message_read_at_t_was_sent_before_t():
    events = []
    eng = Engine(from_dict(chain(), ALL_LATE), trace=events.append)
    for _ in range(10):
        eng.step()
    reads = [(e.tick, e.where, edge, msg) for e in events if e.kind == "act" for edge, msg in e.value.items()]
    assert len(reads) >= 20
    for tick, agent, edge, msg in reads:
        assert msg is not None and msg.sent < tick, (agent, tick, edge)
    # the control: with latency 0 on l1 -> l2, l2 reads what l1 sent in the same tick
    events.clear()
    eng = Engine(from_dict(chain(), [o for o in ALL_LATE if not o.startswith("edges.1.")]), trace=events.append)
    for _ in range(3):
        eng.step()
    assert any(msg.sent == e.tick for e in events if e.kind == "act" and e.where == "l2"
               for msg in e.value.values())


# ----- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("agents.l1.update.prob=1.5", "agents.l1.update.prob: must be within [0, 1], got 1.5"),
    ("agents.l2.update.prob=-0.1", "agents.l2.update.prob: must be within [0, 1], got -0.1"),
    ("agents.l2.update.prob=often", "agents.l2.update.prob: expected a number"),
    ("edges.1.latency=-1", "edges.1.latency: must be >= 0"),
    ("edges.0.latency=-3", "edges.0.latency: must be >= 0"),
    ("edges.2.grad_latency=-1", "edges.2.grad_latency: must be >= 0"),
    ("edges.1.latency=0.5", "edges.1.latency: expected an integer"),
    ("agents.l3.clock.period=0", "agents.l3.clock.period: must be >= 1"),
    ("agents.l3.clock.phase=-1", "agents.l3.clock.phase: must be >= 0"),
])
def test_bad_asynchrony_values_are_one_line_errors(override, expected):
    with pytest.raises(ScenarioError) as e:
        from_dict(chain(), [override])
    assert expected in str(e.value) and "\n" not in str(e.value)
