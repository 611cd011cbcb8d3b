"""``sg.sender_step: r2``: a sender whose every gradient is a g_hat steps with its lr times clamp(M's running
r2, 0, 1); of a sender with a loss of its own only the head toward the edge is gated; a pettingzoo ``direct``
action port (the output is the env's action, no loss) does not count as a loss."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
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
    """Per tick: (the sender's parameter change, the factor its optimizer stepped with: its lr over the
    spec's, M's factor after the tick); the final engine."""
    engine = Engine(from_dict(copy.deepcopy(raw), overrides))
    lr = engine.agents[sender].spec.optimizer.lr
    out, before = [], flat(engine, sender)
    for _ in range(ticks):
        engine.step()
        now = flat(engine, sender)
        used = engine.agents[sender].optimizer.param_groups[0]["lr"] / lr
        out.append((now - before, used, engine.edge(sender, receiver)[0].sg.sender_factor()))
        before = now
    return out, engine


def check_gate(raw: dict, sender: str, receiver: str, ticks: int, kind: str) -> None:
    plain, _ = trajectory(raw, [], sender, receiver, ticks)
    gated, engine = trajectory(raw, [f"interface.sg.sender_step={kind}"], sender, receiver, ticks)
    assert all(used == 1.0 for _, used, _ in plain)  # sender_step optimizer: the factor is 1
    # the two runs are the same until the sender's first non-zero g_hat (M starts at zero); at that step
    # (SGD) the gated sender's change is the plain one's times the factor it stepped with
    first = next(i for i, (d, _, _) in enumerate(plain) if d.abs().max() > 0)
    d_gated, used, _ = gated[first]
    assert 0.0 <= used < 1.0
    assert abs(float(d_gated.norm()) - used * float(plain[first][0].norm())) <= 0.02 * float(plain[first][0].norm())
    if kind == "r2":  # r2 starts at 0 and stays there while M's fit is poor: the sender is held still
        frozen = [i for i, (_, u, _) in enumerate(gated) if u == 0.0]
        assert len(frozen) >= 3 and not any(gated[i][0].abs().max() > 0 for i in frozen)
        assert any(plain[i][0].abs().max() > 0 for i in frozen)  # meanwhile the plain sender moves
    # once M fits its targets the factor is positive and the gated sender moves
    assert 0.0 < gated[-1][2] < 1.0 and sum(bool(d.abs().max() > 0) for d, _, _ in gated) >= 10
    if kind == "r2":
        assert float(engine.collect()[f"sg/{sender}-{receiver}/r2"]) > 0.0


@pytest.mark.parametrize("kind", ["r2", "snr"])
def test_the_gate_holds_a_layer_that_learns_only_from_g_hat(kind) -> None:
    check_gate(CHAIN, "a", "b", 60, kind)


@pytest.mark.parametrize("kind", ["r2", "snr"])
def test_the_gate_holds_a_speaker_whose_only_output_port_is_a_direct_action(kind) -> None:
    check_gate(RELAY, "talker", "hearer", 200, kind)


def test_snr_is_the_rms_of_g_hat_over_the_rms_of_its_targets() -> None:
    """A hand computation: M's factor after its regressions is sqrt(EMA E||g_hat||^2 / EMA E||target||^2)."""
    engine = Engine(from_dict(copy.deepcopy(CHAIN), ["interface.sg.sender_step=snr"]))
    sg = engine.edge("a", "b")[0].sg
    pred = energy = 0.0
    seen = 0
    for _ in range(12):
        before = sg.last_regression
        engine.step()
        if sg.last_regression is not None and sg.last_regression is not before:
            g_hat, target = sg.last_regression
            pred = 0.9 * pred + 0.1 * float(g_hat.pow(2).sum()) / g_hat.shape[0]
            energy = 0.9 * energy + 0.1 * float(target.pow(2).sum()) / target.shape[0]
            seen += 1
    assert seen >= 10 and 0.0 < sg.sender_factor() < 1.0
    assert sg.sender_factor() == pytest.approx(min((pred / energy) ** 0.5, 1.0), rel=1e-9)


def hier(overrides: list[str]) -> Engine:
    """hier_rnn with A's head stepping at its plain lr (the file ships r2) and without A's weight decay (which
    moves the head before any g_hat), unless ``overrides`` say otherwise."""
    return Engine(load(ROOT / "scenarios/hier_rnn.yaml", ["device=cpu", "interface.sg.sender_step=optimizer",
                                                          "agents.A.optimizer.weight_decay=0", *overrides]))


def parts(engine: Engine, agent: str, part: str) -> torch.Tensor:
    a = engine.agents[agent]
    module = a.body if part == "body" else a.heads[part]
    return torch.cat([p.detach().reshape(-1).clone() for p in module.parameters()])


def test_only_the_head_of_a_sender_with_its_own_loss_is_gated() -> None:
    """hier_rnn's A scores task.a itself and sends to B through its head ``B``, which only g_hat trains: with
    r2 that head steps by M's factor, A's body by its own lr. Until M's first g_hat both runs are the same;
    at A's first step with a non-zero g_hat (same gradients, same Adam state) the gated head's step is the
    plain head's times the factor, the body's step is the plain body's."""
    gated, plain = hier(["interface.sg.sender_step=r2"]), hier([])
    for _ in range(200):
        before = [parts(e, "A", p) for e in (gated, plain) for p in ("body", "B")]
        gated.step()
        plain.step()
        after = [parts(e, "A", p) for e in (gated, plain) for p in ("body", "B")]
        body_g, head_g, body_p, head_p = (y - x for x, y in zip(before, after))
        if head_p.abs().max() > 0:
            break
    else:
        raise AssertionError("A's head never stepped")
    factor = gated.edge("A", "B")[0].sg.sender_factor()
    assert 0.0 < factor < 0.1  # M has just begun to fit
    # the gated step is ~1e-6 where the parameters are ~0.1: compare norms (float32 rounds each element)
    assert abs(float(head_g.norm() / head_p.norm()) / factor - 1.0) < 0.02
    lrs = {g["part"]: g["lr"] for g in gated.agents["A"].optimizer.param_groups}  # as A stepped
    assert lrs["body"] == lrs["task:a"] == 3e-3 and abs(lrs["B"] - 3e-3 * factor) < 1e-12
    assert torch.allclose(body_g, body_p, rtol=1e-5, atol=1e-9) and body_p.abs().max() > 0


def test_a_sender_with_its_own_loss_and_no_head_on_the_edge_steps_as_usual() -> None:
    ends = []
    for overrides in ([], ["interface.sg.sender_step=r2"]):
        engine = hier(["agents.A.heads={task.a: {}}", *overrides])  # A sends its LSTM output itself
        for _ in range(48):
            engine.step()
        ends.append(flat(engine, "A"))
        factor = engine.edge("A", "B")[0].sg.sender_factor()
    assert factor < 1.0  # the gate would have scaled A's steps, were A g_hat-only
    assert torch.equal(ends[0], ends[1])


def test_step_together_equals_each_optimizer_stepping_alone() -> None:
    """Several Adams, one with groups of different lrs (a gated head): fused steps equal separate ones, and
    no group steps twice."""
    from corporation.optim import step_together

    def build():
        torch.manual_seed(0)
        nets = [torch.nn.Linear(4, 3) for _ in range(3)]
        opts = [torch.optim.Adam([{"params": [nets[0].weight]}, {"params": [nets[0].bias], "lr": 0.0}],
                                 lr=1e-2, foreach=True),
                torch.optim.Adam(nets[1].parameters(), lr=1e-2, foreach=True),
                torch.optim.Adam(nets[2].parameters(), lr=3e-2, foreach=True)]
        return nets, opts

    results = []
    for together in (False, True):
        nets, opts = build()
        for step in range(3):
            for n in nets:
                n.zero_grad()
                n(torch.full((2, 4), float(step + 1))).pow(2).sum().backward()
            if together:
                step_together(opts)
            else:
                for o in opts:
                    o.step()
        results.append([p.detach().clone() for n in nets for p in n.parameters()])
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)
    assert torch.equal(results[1][1], build()[0][0].bias.detach())  # the lr-0 group never moved
