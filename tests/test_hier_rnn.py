"""The two-timescale hierarchical system (scenarios/hier_rnn.yaml): clocks, update schedules in DNI and
locked mode, the sampled A -> B edge, the synthetic-input variant, the run folder and a seeded learning run."""
from __future__ import annotations

import io
from contextlib import redirect_stderr
from pathlib import Path

import pytest
import torch

import corporation  # noqa: F401  (registers the built-in kinds)
from corporation import Engine, Event, ScenarioError
from corporation.scenario import load

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "hier_rnn.yaml"
SMALL = ["task.test_streams=16", "task.batch_size=8"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny LSTMs: one intra-op thread is much faster (as the runner does), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def clocks(T: int) -> list[str]:
    return [f"task.T={T}", f"agents.A.update.unroll={T}", f"agents.B.clock.period={T}",
            f"agents.B.clock.phase={T - 1}", f"agents.B.update.unroll={T}"]


def engine(T: int, *extra: str) -> Engine:
    return Engine(load(SCENARIO, clocks(T) + SMALL + list(extra)))


def trace(eng: Engine, ticks: int) -> dict[str, list[int]]:
    """The ticks at which each agent acted and at which it updated."""
    out = {"A_acts": [], "B_acts": [], "A_updates": [], "B_updates": []}
    for _ in range(ticks):
        t = eng.tick
        before = {n: dict(a.counts) for n, a in eng.agents.items()}
        eng.step()
        for n, a in eng.agents.items():
            if a.counts["acted"] > before[n]["acted"]:
                out[f"{n}_acts"].append(t)
            if a.counts["updates"] > before[n]["updates"]:
                out[f"{n}_updates"].append(t)
    return out


@pytest.mark.parametrize("T", [2, 4])
@pytest.mark.parametrize("mode", ["dni", "locked"])
def test_b_acts_only_every_T_ticks(T, mode):
    eng = engine(T, *(["interface.kind=backprop"] if mode == "locked" else []))
    tr = trace(eng, 3 * T * T)
    assert tr["A_acts"] == list(range(3 * T * T))
    assert tr["B_acts"] == list(range(T - 1, 3 * T * T, T))
    assert eng.agents["B"].counts["idle"] == 0


@pytest.mark.parametrize("T", [2, 4])
def test_locked_mode_a_makes_no_update_before_T2_ticks(T):
    tr = trace(engine(T, "interface.kind=backprop"), 3 * T * T)
    assert tr["A_updates"] == [T * T - 1, 2 * T * T - 1, 3 * T * T - 1]
    assert tr["B_updates"] == tr["A_updates"]


@pytest.mark.parametrize("T", [2, 4])
def test_dni_mode_a_updates_every_T_ticks(T):
    tr = trace(engine(T), 3 * T * T)
    assert tr["A_updates"] == list(range(T - 1, 3 * T * T, T))
    assert tr["B_updates"] == [T * T - 1, 2 * T * T - 1, 3 * T * T - 1]


def test_show_prints_the_clock_table():
    from corporation.show import describe

    text = describe(load(SCENARIO))
    rows = {line.split()[0]: line.split()[1] for line in text.splitlines()[-2:]}
    assert rows["A"].startswith("AAAUAAAUAAAUAAAU") and rows["B"].startswith("...A...A...A...U")
    assert "sample" in text


def test_sampled_edge_posts_only_when_b_reads():
    """A posts (and asks M for g_hat) only at B's ticks; a 'hold' edge instead posts every tick. The posts
    are the trace's ``send`` events; M's prediction has no trace event, so ``predict`` of A's own M (the
    outbox's ``sg``) is wrapped to see when g_hat is asked for."""
    T = 4
    posted: dict[str, list[int]] = {}
    asked: dict[str, list[int]] = {}
    for kind, extra in (("sample", []), ("hold", ["edges.1.sample=false", "edges.1.hold=true"])):
        events: list[Event] = []
        eng = Engine(load(SCENARIO, clocks(T) + SMALL + extra), trace=events.append)
        sg = eng.edge("A", "B")[0].sg
        seen = asked.setdefault(kind, [])
        predict = sg.predict
        sg.predict = lambda bid, h, c, tick, _p=predict, _s=seen: (_s.append(tick), _p(bid, h, c, tick))[1]
        trace(eng, 2 * T * T)
        posted[kind] = [e.tick for e in events if e.kind == "send" and e.where == "A-B"]
        assert all(e.batch_id == e.tick for e in events if e.kind == "send" and e.where == "A-B")
        assert eng.agents["B"].counts["acted"] == 2 * T
    assert posted["sample"] == asked["sample"] == list(range(T - 1, 2 * T * T, T))
    assert posted["hold"] == asked["hold"] == list(range(2 * T * T))


def test_m_targets_arrive_for_every_message_and_are_stale_by_at_most_T2_minus_T():
    T = 4
    events: list[Event] = []
    eng = Engine(load(SCENARIO, clocks(T) + SMALL), trace=events.append)
    trace(eng, 2 * T * T)
    m = eng.collect()
    assert m["sg/A-B/staleness_max"] == T * T - T
    assert m["sg/A-B/staleness"] == pytest.approx((T * T - T) / 2)
    sent = {e.batch_id: e.tick for e in events if e.kind == "send" and e.where == "A-B"}
    targets = {e.batch_id: e.tick for e in events if e.kind == "target" and e.where == "A-B"}
    assert sorted(sent) == list(range(T - 1, 2 * T * T, T))
    assert targets.keys() == sent.keys(), "every message got its target (none for unread instants)"
    assert all(e.value.batch_id == e.batch_id for e in events if e.kind == "target")
    ages = [targets[k] - sent[k] for k in sent]
    assert max(ages) == T * T - T and sum(ages) / len(ages) == pytest.approx((T * T - T) / 2)
    assert not eng.edge("A", "B")[0].sg.records, "and M holds no prediction waiting for a target"


def test_sample_on_a_task_edge_follows_the_receiver_or_is_a_one_line_error():
    """``sample`` on task.x -> A (A slowed to every other tick): the task posts only the ids A reads at
    delivery (t + latency), so A receives exactly those and processes each at once. Into a loss port
    (A -> task.a) there is no receiver clock to follow: a one-line error."""
    slow_a = ["edges.0.sample=true", "agents.A.clock.period=2", "agents.A.clock.phase=1"]
    for latency in (0, 1):
        events: list[Event] = []
        eng = Engine(load(SCENARIO, clocks(4) + SMALL + slow_a + [f"edges.0.latency={latency}"]),
                     trace=events.append)
        for _ in range(16):
            eng.step()
        got = [(e.tick, e.batch_id) for e in events if e.kind == "deliver" and e.where == "task.x-A"]
        assert got == [(t, t - latency) for t in range(1, 16, 2)], "only the ids A reads, at its ticks"
        acts = [(e.tick, e.batch_id) for e in events if e.kind == "act" and e.where == "A"]
        assert acts == got and eng.agents["A"].counts["idle"] == 0
    with pytest.raises(ScenarioError, match=r"scenarios/hier_rnn\.yaml: edges\.0: 'A' acts every 2 ticks"):
        load(SCENARIO, clocks(4) + slow_a[1:])  # the control: without 'sample' A would fall behind
    with pytest.raises(ScenarioError, match=r"edges\.2\.sample: 'sample' applies to edges into agents") as e:
        load(SCENARIO, ["edges.2.sample=true"])
    assert "\n" not in str(e.value), "errors are one line"


def test_synthetic_input_lets_b_act_at_once_despite_latency():
    """With a 1-tick latency and a synthetic input, B processes the id of its own tick with I(x) and the
    late real message only trains I; without I, B processes an older id (it waits)."""
    T = 4
    eng = engine(T, "edges.1.interface.synthetic_input.context=task.x", "edges.1.latency=1")
    for t in range(3 * T * T):
        eng.step()
        if t % T == T - 1:
            assert eng.agents["B"].last_id == t
    assert eng.agents["B"].counts["synthetic_inputs"] == 3 * T and eng.agents["B"].counts["idle"] == 0
    assert eng.collect()["si/A-B/loss"] > 0
    waiting = engine(T, "edges.1.latency=1")
    for _ in range(2 * T):
        waiting.step()
    assert waiting.agents["B"].last_id == 2 * T - 2  # the id A sent one tick before B's tick


def test_run_folder_has_the_plot_and_a_plot_failure_only_warns(tmp_path, monkeypatch):
    from corporation.runner import run_scenario

    s = load(SCENARIO, SMALL + ["train.ticks=40", "train.eval_every=20", "train.progress=false"])
    summary = run_scenario(s, tmp_path / "ok", quiet=True)
    assert (tmp_path / "ok" / "accuracy.png").stat().st_size > 1000
    assert {"test/A/accuracy", "test/B/accuracy", "test/B/mae", "train/A/updates"} <= set(summary["final"])
    monkeypatch.setattr("corporation.plots.plot_run", lambda *a, **k: 1 / 0)
    err = io.StringIO()
    with redirect_stderr(err):
        run_scenario(s, tmp_path / "broken", quiet=True)
    assert (tmp_path / "broken" / "summary.json").exists() and "warning: no accuracy plot" in err.getvalue()


def learn(*extra: str) -> dict[str, float]:
    # the plain M (no target normalisation): the scenario's sg.normalize, chosen at T = 4 and 50k ticks,
    # learns slower in this short T = 2 budget (B 0.70 vs 0.85 when written)
    eng = Engine(load(SCENARIO, clocks(2) + ["task.test_streams=128", "seed=0", "interface.sg.normalize=false",
                                             *extra]))
    for _ in range(1200):
        eng.step()
    return eng.evaluate()


def test_seeded_short_dni_run_learns_above_baseline():
    """T = 2, 1200 ticks: both networks well above the majority class; with g_hat never applied (A gets
    no signal from B) B stays near its majority class, so this fails if the DNI rule breaks."""
    r = learn()
    assert r["test/A/accuracy"] >= r["test/A/majority"] + 0.25, r  # seen: 0.88 vs 0.49
    assert r["test/B/accuracy"] >= r["test/B/majority"] + 0.12, r  # seen: 0.85 vs 0.62
    broken = learn("interface.sg.scale=0")
    assert broken["test/B/accuracy"] < broken["test/B/majority"] + 0.1, broken  # seen: 0.67 vs 0.62
