"""The ``pettingzoo`` task: the shipped env passes PettingZoo's API test, errors are one line, messages between
bound agents are DNI edges while the env gets their numpy copy, agents that leave are masked, AEC envs work."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from pettingzoo.test import parallel_api_test

from corporation import Engine, ScenarioError, from_dict, load
from corporation.envs.toy import RelayEnv

ROOT = Path(__file__).resolve().parent.parent

RELAY = {
    "name": "relay", "seed": 0, "device": "cpu",
    "task": {"kind": "pettingzoo", "env": "corporation.envs.toy", "env_kwargs": {"k": 3, "max_cycles": 4},
             "num_envs": 8, "actions": {"speaker": "direct"}, "observe": {"listener": [3, 4]}, "test_episodes": 4},
    "interface": {"kind": "dni", "sg": {"hidden": 0}},
    "agents": {
        "talker": {"model": {"kind": "mlp", "hidden": [16], "activation": "tanh", "out_activation": False},
                   "optimizer": {"lr": 3.0e-3}},
        "hearer": {"model": {"kind": "mlp", "hidden": [32], "activation": "tanh", "out_activation": False},
                   "optimizer": {"lr": 3.0e-3}, "update": {"unroll": 5}},
    },
    "edges": [{"src": "task.speaker_obs", "dst": "talker"}, {"src": "talker", "dst": "task.speaker_act"},
              {"src": "talker", "dst": "hearer"}, {"src": "task.listener_obs", "dst": "hearer"},
              {"src": "hearer", "dst": "task.listener_act"}],
    "train": {"ticks": 40, "eval_every": 40, "progress": False},
}


def relay(overrides: list[str] = ()):
    return from_dict(copy.deepcopy(RELAY), list(overrides))


def one_line_error(overrides: list[str]) -> str:
    with pytest.raises(ScenarioError) as e:
        relay(overrides)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("kwargs", [{}, {"speaker_steps": 2}, {"k": 5, "max_cycles": 9}])
def test_shipped_env_passes_parallel_api_test(kwargs):
    parallel_api_test(RelayEnv(**kwargs), num_cycles=50)


def test_unknown_env_agent_is_a_one_line_error_with_a_suggestion():
    msg = one_line_error(["task.actions={speeker: direct}"])
    assert "task.actions.speeker" in msg and "no agent 'speeker'" in msg and "did you mean 'speaker'" in msg
    msg = one_line_error(["edges.4.dst=task.listner_act"])
    assert "unknown node 'task.listner_act'" in msg and "did you mean 'task.listener_act'" in msg


def test_undrivable_action_and_missing_module_are_one_line_errors():
    msg = one_line_error(["task.actions={listener: direct}"])
    assert "listener" in msg and "Discrete(3)" in msg and "cannot be driven directly" in msg
    msg = one_line_error(["task.actions={speaker: direct, listener: one_hot}"])
    assert "listener" in msg and "Discrete(3)" in msg and "cannot be driven" in msg
    msg = one_line_error(["task.env=nosuchpkg.nosuchenv"])
    assert "task.env" in msg and "cannot import PettingZoo env module 'nosuchpkg.nosuchenv'" in msg


def test_message_is_learned_through_dni_while_the_env_gets_its_numpy_copy():
    def run(overrides):
        sent = []
        eng = Engine(relay(overrides), trace=lambda e: sent.append(e.value.clone())
                     if e.kind == "output" and e.where == "talker-task.speaker_act" else None)
        before = [p.detach().clone() for p in eng.agents["talker"].body.parameters()]
        for _ in range(39):  # 39 steps: mid-episode (max_cycles 4), so the env still holds the last message
            eng.step()
        copies = np.stack([e.message for e in eng.task.envs])  # what the env received at the last step
        assert np.allclose(copies, sent[-1].clamp(0, 1).numpy(), atol=1e-6)
        moved = sum(float((p.detach() - b).abs().sum()) for p, b in zip(eng.agents["talker"].body.parameters(), before))
        return moved, eng.collect()

    moved, metrics = run([])
    assert moved > 1e-3 and metrics["sg/talker-hearer/loss"] > 0  # M is trained by the hearer's gradients
    assert run(["interface.sg.scale=0"])[0] == 0.0  # zero-scale DNI: the message gets no learning signal


def test_agents_that_leave_are_masked_until_the_episode_ends():
    eng = Engine(relay(["task.env_kwargs={k: 3, max_cycles: 4, speaker_steps: 2}", "task.actions={}",
                        "agents.talker.update.unroll=2"]))
    task = eng.task
    for tick in range(4):  # steps 1..4 of the first episode; the speaker leaves after step 2
        eng.step()
        if tick == 1:
            assert not task._live("speaker").any() and task._live("listener").all()
        if tick == 2:
            x = task.inputs[2]["speaker_obs"]
            assert torch.all(x == 0), "a departed agent observes zeros"
            steps = eng.agents["talker"].loss_ports["speaker_act"].rollout.steps
            assert not steps[-1].feedback.valid.any(), "its rows are masked out of its loss"
    assert task.reset_rows.all(), "every copy ended at max_cycles and was reset"
    eng.step()
    assert task._live("speaker").all()
    assert eng.agents["talker"].loss_ports["speaker_act"].rollout.steps[-1].feedback.valid.all()


def test_aec_env_goes_through_pettingzoos_conversion():
    raw = {"name": "rps", "seed": 0, "device": "cpu",
           "task": {"kind": "pettingzoo", "env": "pettingzoo.classic.rps_v2", "num_envs": 4, "test_episodes": 2,
                    "env_kwargs": {"max_cycles": 5}},
           "agents": {"a": {"model": {"kind": "linear"}, "update": {"unroll": 3}},
                      "b": {"model": {"kind": "linear"}, "update": {"unroll": 3}}},
           "edges": [{"src": "task.player_0_obs", "dst": "a"}, {"src": "a", "dst": "task.player_0_act"},
                     {"src": "task.player_1_obs", "dst": "b"}, {"src": "b", "dst": "task.player_1_act"}],
           "train": {"ticks": 20, "eval_every": 20, "progress": False}}
    eng = Engine(from_dict(raw))
    last = eng.run()
    assert last["train/env_steps"] == 80 and np.isfinite(last["test/episode_return"])


@pytest.mark.skipif(importlib.util.find_spec("mpe2") is None, reason="mpe2 not installed (pip install mpe2)")
def test_speaker_listener_scenario_runs():
    scenario = load(ROOT / "scenarios" / "speaker_listener.yaml",
                    ["task.num_envs=2", "task.test_episodes=1", "train.ticks=14", "train.eval_every=14"])
    last = Engine(scenario).run()
    assert last["train/env_steps"] == 28 and "test/listener_0/episode_return" in last


@pytest.mark.skipif(importlib.util.find_spec("mpe2") is None, reason="mpe2 not installed (pip install mpe2)")
def test_one_hot_listener_sends_mpe_its_discrete_moves_as_continuous_actions():
    from corporation.envs.pz_task import PZTask

    scenario = load(ROOT / "scenarios" / "speaker_listener.yaml", ["task.num_envs=2"])
    assert PZTask.ports(scenario.task)["listener_0_act"].size == 5 + 1  # logits of MPE's 5 moves, a value
    task = PZTask(scenario.task, torch.device("cpu"), torch.Generator().manual_seed(0))
    moves = task.heads["listener_0"].to_env(torch.tensor([2, 4]))
    np.testing.assert_array_equal(moves, [[0, 0, 1, 0, 0], [0, 0, 0, 0, 1]])  # right, up: u = a[2]-a[1], a[4]-a[3]


def test_turn_based_aec_game_is_one_clear_line():
    raw = {"name": "ttt", "seed": 0, "device": "cpu",
           "task": {"kind": "pettingzoo", "env": "pettingzoo.classic.tictactoe_v3", "num_envs": 2},
           "agents": {"a": {"model": {"kind": "linear"}, "update": {"unroll": 3}}},
           "edges": [{"src": "task.player_1_obs", "dst": "a"}, {"src": "a", "dst": "task.player_1_act"}]}
    with pytest.raises(ScenarioError) as e:
        from_dict(raw)
    msg = str(e.value)
    assert "\n" not in msg and "turn-based AEC game" in msg and "task.env" in msg
