"""``sg.sender_step: r2``: a sender whose every gradient is a g_hat steps with its lr times clamp(M's running
r2, 0, 1); a sender with a loss of its own is not touched; a pettingzoo ``direct`` action port (the output is
the env's action, no loss) does not count as a loss."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from corporation import Engine, from_dict, load

ROOT = Path(__file__).resolve().parent.parent

SGD = {"kind": "sgd", "lr": 0.05}
CHAIN = {
    "name": "chain", "seed": 0, "device": "cpu",
    "task": {"kind": "classification", "dataset": "digits", "batch_size": 32},
    "interface": {"kind": "dni", "sg": {"hidden": 0}},
    "agents": {"a": {"model": {"kind": "mlp", "out": 16}, "optimizer": SGD},
               "b": {"model": {"kind": "linear"}, "optimizer": SGD}},
    "edges": [{"src": "task.x", "dst": "a"}, {"src": "a", "dst": "b"}, {"src": "b", "dst": "task.y"}],
    "train": {"ticks": 60, "eval_every": 60, "progress": False},
}
RELAY = {
    "name": "relay", "seed": 0, "device": "cpu",
    "task": {"kind": "pettingzoo", "env": "corporation.envs.toy", "env_kwargs": {"k": 3, "max_cycles": 4},
             "num_envs": 8, "actions": {"speaker": "direct"}, "observe": {"listener": [3, 4]}, "test_episodes": 4},
    "interface": {"kind": "dni", "sg": {"hidden": 0}, "context": "task.speaker_obs"},
    "agents": {
        "talker": {"model": {"kind": "mlp", "hidden": [16], "activation": "tanh", "out_activation": False},
                   "optimizer": SGD},
        "hearer": {"model": {"kind": "actor_critic", "hidden": [32]}, "optimizer": {"lr": 3.0e-3},
                   "update": {"unroll": 5}},
    },
    "edges": [{"src": "task.speaker_obs", "dst": "talker"}, {"src": "talker", "dst": "task.speaker_act"},
              {"src": "talker", "dst": "hearer"}, {"src": "task.listener_obs", "dst": "hearer"},
              {"src": "hearer", "dst": "task.listener_act"}],
    "train": {"ticks": 200, "eval_every": 200, "progress": False},
}


def flat(engine: Engine, agent: str) -> torch.Tensor:
    """The agent's own parameters (body and heads; not its edge Ms)."""
    a = engine.agents[agent]
    return torch.cat([p.detach().reshape(-1).clone() for m in (a.body, a.heads) for p in m.parameters()])


def trajectory(raw: dict, overrides: list[str], sender: str, receiver: str, ticks: int):
    """Per tick: (did the sender's parameters change, M's sender factor after the tick); the final engine."""
    engine = Engine(from_dict(copy.deepcopy(raw), overrides))
    out, before = [], flat(engine, sender)
    for _ in range(ticks):
        engine.step()
        now = flat(engine, sender)
        out.append((not torch.equal(now, before), engine.edge(sender, receiver)[0].sg.sender_factor()))
        before = now
    return out, engine


def check_r2_gates_the_sender(raw: dict, sender: str, receiver: str, ticks: int) -> None:
    plain, _ = trajectory(raw, [], sender, receiver, ticks)
    gated, engine = trajectory(raw, ["interface.sg.sender_step=r2"], sender, receiver, ticks)
    assert all(f == 1.0 for _, f in plain)  # sender_step optimizer: the factor is 1
    # the factor M holds after tick i scales the sender's step at tick i + 1; it starts at 0 (M's running r2)
    frozen = [0] + [i for i in range(1, ticks) if gated[i - 1][1] == 0.0]
    assert len(frozen) >= 3 and not any(gated[i][0] for i in frozen)
    assert any(plain[i][0] for i in frozen)  # meanwhile the same sender without the gate moves
    # when M fits its targets (running r2 > 0) the factor is positive and the gated sender moves
    assert 0.0 < gated[-1][1] < 1.0 and sum(moved for moved, _ in gated) >= 10
    assert float(engine.collect()[f"sg/{sender}-{receiver}/r2"]) > 0.0


def test_r2_gates_a_layer_that_learns_only_from_g_hat() -> None:
    check_r2_gates_the_sender(CHAIN, "a", "b", 60)


def test_r2_gates_a_speaker_whose_only_output_port_is_a_direct_action() -> None:
    check_r2_gates_the_sender(RELAY, "talker", "hearer", 200)


def test_a_sender_with_its_own_loss_steps_as_usual() -> None:
    """hier_rnn's A scores task.a itself and sends to B over a DNI edge: r2 must not touch its step."""
    ends = []
    for overrides in ([], ["interface.sg.sender_step=r2"]):
        engine = Engine(load(ROOT / "scenarios/hier_rnn.yaml", ["device=cpu", *overrides]))
        for _ in range(48):
            engine.step()
        ends.append(flat(engine, "A"))
        factor = engine.edge("A", "B")[0].sg.sender_factor()
    assert factor < 1.0  # the gate would have scaled A's steps, were A g_hat-only
    assert torch.equal(ends[0], ends[1])
