"""``sg.history: K``: M on an edge also reads the K messages its sender posted on that edge before (most recent
first), from the sender's own copies: zeros before the first message and in rows whose episode restarted.
Checked against the engine trace's ``send`` events; bad values are one-line errors."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import corporation  # noqa: F401  (registers the built-in kinds)
from corporation import Engine, ScenarioError, from_dict, load

ROOT = Path(__file__).resolve().parents[1]
HIER = ROOT / "scenarios" / "hier_rnn.yaml"
T2 = ["task.T=2", "agents.A.update.unroll=2", "agents.B.clock.period=2", "agents.B.clock.phase=1",
      "agents.B.update.unroll=2", "task.test_streams=16", "task.batch_size=8"]
RELAY = {
    "name": "relay", "seed": 0, "device": "cpu",
    "task": {"kind": "pettingzoo", "env": "corporation.envs.toy", "env_kwargs": {"k": 3, "max_cycles": 3},
             "num_envs": 6, "actions": {"speaker": "direct"}, "observe": {"listener": [3, 4]}, "test_episodes": 2},
    "interface": {"kind": "dni", "sg": {"hidden": 0, "history": 2}, "context": "task.speaker_obs"},
    "agents": {
        "talker": {"model": {"kind": "mlp", "hidden": [8], "activation": "tanh", "out_activation": False}},
        "hearer": {"model": {"kind": "actor_critic", "hidden": [16]}, "update": {"unroll": 4}},
    },
    "edges": [{"src": "task.speaker_obs", "dst": "talker"}, {"src": "talker", "dst": "task.speaker_act"},
              {"src": "talker", "dst": "hearer"}, {"src": "task.listener_obs", "dst": "hearer"},
              {"src": "hearer", "dst": "task.listener_act"}],
    "train": {"ticks": 40, "eval_every": 40, "progress": False},
}


def traced(scenario, ticks: int, src: str, dst: str) -> tuple[Engine, dict[int, torch.Tensor], list]:
    events = []
    engine = Engine(scenario, trace=events.append)
    m = engine.edge(src, dst)[0].sg
    seen: dict[int, torch.Tensor] = {}
    for _ in range(ticks):
        engine.step()
        for batch_id, record in m.records.items():
            seen.setdefault(batch_id, record[1].clone())
    sends = [e.value for e in events if e.kind == "send" and e.where == f"{src}-{dst}"]
    return engine, seen, sends


def test_m_reads_the_edges_previous_messages_most_recent_first():
    # targets come back one tick late, so every record is still there at the end of its tick
    engine, seen, sends = traced(load(HIER, T2 + ["interface.sg.history=2", "edges.1.grad_latency=1"]), 24, "A", "B")
    n, c = 16, 5  # the message; B's context: the one-hot count of 3s over T² = 4 ticks (0..4)
    assert engine.edge("A", "B")[0].sg.net[0].in_features == n + c + 2 * n
    assert [s.batch_id for s in sends] == list(range(1, 24, 2))  # a sampled edge: B reads every T = 2 ticks
    assert len(seen) == len(sends)
    zeros = torch.zeros(8, n)
    for i, msg in enumerate(sends):
        ctx = seen[msg.batch_id]
        assert ctx.shape == (8, c + 2 * n)
        previous = [sends[i - k].h if i - k >= 0 else zeros for k in (1, 2)]
        assert torch.equal(ctx[:, c:c + n], previous[0]) and torch.equal(ctx[:, c + n:], previous[1])
    # the message itself is not in its own context: the last send appears in no record yet
    assert not any(torch.equal(ctx[:, c:c + n], sends[-1].h) for ctx in seen.values())


def test_history_is_cleared_in_rows_whose_episode_restarted():
    engine, seen, sends = traced(from_dict(copy.deepcopy(RELAY)), 12, "talker", "hearer")
    n, c = engine.graph.msg_size[("talker", "hearer")], 3
    assert any(s.reset is not None for s in sends)  # 3-step episodes: rows restart during these ticks
    assert len(seen) >= len(sends) - 3  # the records of an update tick are trained within it
    for i, msg in enumerate(sends):
        if msg.batch_id not in seen:
            continue
        past = seen[msg.batch_id][:, c:]
        # a row's history is what it sent before in the same episode: cleared at a restart, then refilled
        expect = torch.zeros(6, 2 * n)
        for row in range(6):
            for k in (1, 2):
                j = i - k
                if j < 0 or any(sends[x].reset is not None and bool(sends[x].reset[row]) for x in range(j + 1, i + 1)):
                    break
                expect[row, (k - 1) * n:k * n] = sends[j].h[row]
        assert torch.equal(past, expect), i


def test_zero_history_is_the_plain_m():
    engine = Engine(load(HIER, T2 + ["interface.sg.history=0"]))
    assert engine.edge("A", "B")[0].sg.net[0].in_features == 16 + 5


@pytest.mark.parametrize("sets, key", [
    (["interface.sg.history=-1"], "interface.sg.history"),
    (["interface.sg.history=65"], "interface.sg.history"),
    (["interface.kind=bp_lambda", "interface.context=null", "interface.sg.history=1"], "interface.sg.history"),
])
def test_bad_history_is_a_one_line_error(sets, key):
    raw = copy.deepcopy(RELAY)
    with pytest.raises(ScenarioError) as e:
        from_dict(raw, sets)
    assert key in str(e.value)


def test_a_state_m_takes_no_history():
    with pytest.raises(ScenarioError) as e:
        load(ROOT / "scenarios" / "copy.yaml", ["agents.lstm.state.sg.history=2"])
    assert "agents.lstm.state.sg.history" in str(e.value)
