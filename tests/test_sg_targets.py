"""sg.target options (corporation/targets.py), each checked against a hand computation: on a 1-unit tanh RNN
(the state M: discounted bootstrap, n-step, lambda, exact) and on a chain of linear layer-agents (the edge
M: discounted bootstrap, lambda, exact = the true backprop gradient); plus the option checks."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import chain
from test_rnn import WindowRecorder, hand_target, seq_raw

from corporation import Engine, from_dict
from corporation.errors import ScenarioError

B = 3  # seq_raw's batch size


def through(w: dict, v: torch.Tensor | None) -> torch.Tensor:
    """Batch-mean gradient at window w's start of (its losses + <h_end, v>), by hand (test_rnn.hand_target)."""
    return hand_target({**w, "g": v}, B) / B


def g_of(w: dict) -> torch.Tensor:
    return w["g"] if w["g"] is not None else torch.zeros(B, 1)


def hand_lambda(ws: list[dict], gamma: float, lam: float) -> torch.Tensor:
    """G_j = l_j + gamma J_j^T [(1-lam) g_j+1 + lam G_j+1] over the windows ws, g_hat after the last."""
    v = g_of(ws[-1])
    for i in reversed(range(len(ws))):
        w = ws[i]
        own = through(w, None)
        g = torch.zeros(B, 1) if w["fresh"] else own + gamma * (through(w, v) - own)
        if i > 0:
            v = (1.0 - lam) * g_of(ws[i - 1]) + lam * g
    return g * B


@pytest.mark.parametrize("sg, gamma, lam, horizon", [
    ({"gamma": 0.5}, 0.5, 0.0, 1),
    ({"target": "nstep", "gamma": 0.9, "horizon": 2}, 0.9, 1.0, 2),
    ({"target": "lambda", "gamma": 0.8, "lam": 0.5, "horizon": 3}, 0.8, 0.5, 3),
    ({"target": "exact", "horizon": 2}, 1.0, 1.0, 2),
])
def test_state_target_is_the_hand_computed_one(sg, gamma, lam, horizon) -> None:
    raw = seq_raw(state={"sg": {"hidden": 0, "scale": 0.5, **sg}})
    rec = WindowRecorder(raw)
    rec.engine.run(80)
    checked = nonzero = 0
    for k, w in enumerate(rec.windows):
        if w["target"] is None:
            continue
        batch_id, target = w["target"]
        first = batch_id + 1  # the window that starts at boundary batch_id
        assert first == k - horizon + 1
        if batch_id not in w["predicted_before"]:
            continue  # that boundary ended a sequence: M made no prediction
        expect = hand_lambda(rec.windows[first:k + 1], gamma, lam)
        torch.testing.assert_close(target, expect, rtol=1e-4, atol=1e-6)
        checked += 1
        nonzero += bool(w["g"] is not None and w["g"].abs().sum() > 0 and target.abs().sum() > 0)
    assert checked >= 10 and nonzero >= 3


def test_lambda_zero_is_the_bootstrap_and_one_is_nstep() -> None:
    def targets(sg):
        rec = WindowRecorder(seq_raw(state={"sg": {"hidden": 0, "scale": 0.5, **sg}}))
        rec.engine.run(40)
        return [w["target"][1] for w in rec.windows if w["target"] is not None]

    boot = targets({"gamma": 0.7})
    zero = targets({"target": "lambda", "lam": 0.0, "gamma": 0.7, "horizon": 1})
    assert len(boot) == len(zero) > 5
    for a, b in zip(boot, zero):
        torch.testing.assert_close(a, b)


# ----- edge M on a chain of linear layers -------------------------------------------------------------
def linear_chain(sg: dict) -> dict:
    raw = chain()
    raw["agents"]["l1"]["model"] = {"kind": "mlp", "out": 16}
    raw["agents"]["l2"]["model"] = {"kind": "mlp", "out": 8, "activation": "none"}  # J2^T v = v W2
    raw["interface"] = {"kind": "dni", "sg": {"hidden": 0, **sg}}
    return raw


class ChainRecorder:
    """Per tick: the layers' and Ms' parameters before it, the messages sent, and the targets delivered."""

    def __init__(self, raw: dict):
        self.sent: dict[tuple[str, int], torch.Tensor] = {}
        self.targets: dict[tuple[str, int], torch.Tensor] = {}
        self.labels: dict[int, torch.Tensor] = {}
        self.engine = Engine(from_dict(raw), trace=self.on_event)
        self.before: dict[int, dict] = {}

    def on_event(self, e) -> None:
        if e.kind == "send" and not e.where.startswith("task"):
            self.sent[(e.where, e.batch_id)] = e.value.h.detach().clone()
        if e.kind == "act" and e.where == "l3":
            self.labels[e.batch_id] = self.engine.task.context("y", e.batch_id).clone()
        if e.kind == "target":
            self.targets[(e.where, e.batch_id)] = e.value.g.detach().clone()

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            eng = self.engine
            self.before[eng.tick] = {"l2": copy.deepcopy(eng.agents["l2"].body),
                                     "l3": copy.deepcopy(eng.agents["l3"].body),
                                     "m23": copy.deepcopy(eng.agents["l2"].outboxes[0].sg)}
            eng.step()


@pytest.mark.parametrize("sg, gamma, lam", [({"gamma": 0.5}, 0.5, 0.0), ({"target": "lambda", "lam": 0.3,
                                             "gamma": 0.9}, 0.9, 0.3), ({"target": "exact"}, 1.0, 1.0)])
def test_edge_target_is_the_hand_computed_one(sg, gamma, lam) -> None:
    rec = ChainRecorder(linear_chain(sg))
    rec.run(12)
    checked = 0
    for t in range(2, 10):
        before = rec.before[t]
        h1, h2 = rec.sent[("l1-l2", t)], rec.sent[("l2-l3", t)]
        w2 = before["l2"][0].weight  # l2 is one linear layer: J2^T v = v W2
        g_hat = before["m23"](h2, None).detach()  # M23's per-example prediction at h2
        x = h2.clone().requires_grad_(True)  # the true gradient at h2 (l3 is the top layer)
        loss = F.cross_entropy(before["l3"](x), rec.labels[t])
        true2 = torch.autograd.grad(loss, x)[0] * h2.shape[0]
        torch.testing.assert_close(rec.targets[("l2-l3", t)], true2, rtol=1e-4, atol=1e-6)
        g23 = rec.targets[("l2-l3", t)] if lam > 0 else torch.zeros_like(true2)
        expect = gamma * ((1 - lam) * g_hat + lam * g23) @ w2.detach()
        torch.testing.assert_close(rec.targets[("l1-l2", t)], expect, rtol=1e-4, atol=1e-6)
        if sg.get("target") == "exact":  # the true gradient of the loss at h1, by a locked copy
            y = h1.clone().requires_grad_(True)
            loss = F.cross_entropy(before["l3"](before["l2"](y)), rec.labels[t])
            true1 = torch.autograd.grad(loss, y)[0] * h1.shape[0]
            torch.testing.assert_close(rec.targets[("l1-l2", t)], true1, rtol=1e-4, atol=1e-6)
        checked += 1
        assert g_hat.abs().sum() > 0
    assert checked == 8


def test_default_target_is_unchanged_by_an_explicit_bootstrap() -> None:
    runs = [Engine(from_dict(chain(), sets)) for sets in ([], ["interface.sg.target=bootstrap",
                                                              "interface.sg.gamma=1.0"], ["interface.sg.gamma=0.5"])]
    for eng in runs:
        for _ in range(6):
            eng.step()
    params = [[p.detach() for p in eng.agents["l1"].outboxes[0].sg.parameters()] for eng in runs]
    assert all(torch.equal(x, y) for x, y in zip(params[0], params[1]))
    assert not all(torch.equal(x, y) for x, y in zip(params[0], params[2]))  # gamma does change M


@pytest.mark.parametrize("override, key", [
    ("interface.sg.target=nstep", "interface.sg.target"),
    ("interface.sg.gamma=1.5", "sg.gamma"),
    ("interface.sg.lam=-1", "sg.lam"),
    ("interface.sg.horizon=0", "sg.horizon"),
    ("interface.sg.target=sometimes", "sg.target"),
    ("interface.sg.sender_step=fast", "sg.sender_step"),
    ("interface.sg.clip_error=0", "sg.clip_error"),
])
def test_bad_target_options_are_one_line_errors_naming_the_key(override, key) -> None:
    with pytest.raises(ScenarioError) as err:
        from_dict(chain(), [override])
    assert key in str(err.value) and "\n" not in str(err.value)
