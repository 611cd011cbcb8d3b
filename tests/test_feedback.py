"""sg.kind dfa (Direct Feedback Alignment as a synthesizer): g_hat = e R with the output error e and a fixed
random R, checked by hand on a tiny chain; R is never trained."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import chain

from corporation import Engine, from_dict
from corporation.errors import ScenarioError


def dfa_chain(**sg) -> dict:
    raw = chain(interface={"kind": "dni", "sg": {"kind": "dfa", **sg}})
    raw["agents"]["l2"]["model"] = {"kind": "mlp", "out": 8, "activation": "none"}  # h2 = x W2^T + b2
    raw["agents"]["l2"]["optimizer"] = {"kind": "sgd", "lr": 1.0}  # W2 moves by exactly -dL/dW2
    return raw


def recorder(engine) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], object]:
    """A trace callback keeping the last message of each edge and the top layer's labels, in order."""
    sent: dict[str, torch.Tensor] = {}
    labels: list[torch.Tensor] = []

    def on_event(e) -> None:
        if e.kind == "send" and e.where in ("l1-l2", "l2-l3"):
            sent[e.where] = e.value.h.detach().clone()
        if e.kind == "act" and e.where == "l3":
            labels.append(engine().task.context("y", e.batch_id).clone())

    return sent, labels, on_event


def test_dfa_g_hat_is_the_output_error_through_a_fixed_matrix() -> None:
    sent, labels, on_event = recorder(lambda: eng)
    eng = Engine(from_dict(dfa_chain(scale=0.5)), trace=on_event)
    for _ in range(3):  # the error at tick 2 comes from a top layer that already learned
        l2, l3 = copy.deepcopy(eng.agents["l2"].body), copy.deepcopy(eng.agents["l3"].body)
        eng.step()
    R = eng.agents["l2"].outboxes[0].sg.R
    x, h2 = sent["l1-l2"], sent["l2-l3"]
    logits = l3(h2)
    y = labels[-1] if labels[-1].dim() == 2 else F.one_hot(labels[-1], logits.shape[1]).float()
    e = F.softmax(logits, dim=1) - y  # per-example dCE/dlogits
    g = e @ R * 0.5 / x.shape[0]  # applied to h2: batch mean
    torch.testing.assert_close(l2[0].weight - eng.agents["l2"].body[0].weight, (g.T @ x).detach(),
                               rtol=1e-4, atol=1e-6)
    assert g.abs().sum() > 0


def test_dfa_feedback_is_fixed_and_never_trained() -> None:
    eng = Engine(from_dict(chain(interface={"kind": "dni", "sg": {"kind": "dfa"}})))
    eng.step()
    dfas = [o.sg for a in eng.agents.values() for o in a.outboxes if o.sg is not None]
    before = [d.R.clone() for d in dfas]
    first = [p.detach().clone() for p in eng.agents["l1"].body.parameters()]
    out = eng.run(30)
    assert all(list(d.parameters()) == [] for d in dfas)  # nothing an optimizer could move
    assert all(torch.equal(b, d.R) for b, d in zip(before, dfas))
    assert not all(torch.equal(a, b) for a, b in zip(first, eng.agents["l1"].body.parameters()))  # l1 learns
    assert -1.0 <= out["sg/l1-l2/cosine"] <= 1.0


def test_dfa_port_must_be_a_task_port() -> None:
    with pytest.raises(ScenarioError) as err:
        from_dict(chain(interface={"kind": "dni", "sg": {"kind": "dfa", "port": "l3"}}))
    assert "sg.port" in str(err.value)


def test_a_state_m_cannot_be_dfa() -> None:
    from test_rnn import seq_raw
    raw = seq_raw()
    raw["agents"]["r"]["state"]["sg"] = {"kind": "dfa"}
    with pytest.raises(ScenarioError) as err:
        from_dict(raw)
    assert "state.sg.kind" in str(err.value)


def fa_chain(**sg) -> dict:
    raw = dfa_chain()
    raw["interface"] = {"kind": "dni", "sg": {"kind": "fa", **sg}}
    return raw


def test_fa_g_hat_is_the_receivers_backward_through_a_fixed_matrix() -> None:
    """l3 is linear (logits = h2 W3^T + b3), so FA's g_hat on h2 is delta B with delta = dL/dlogits (batch
    mean) and B the fixed matrix of W3's shape; l2 (linear, SGD lr 1, no loss of its own) moves by g^T x."""
    sent, labels, on_event = recorder(lambda: eng)
    eng = Engine(from_dict(fa_chain(scale=0.5)), trace=on_event)
    for _ in range(3):
        l2, l3 = copy.deepcopy(eng.agents["l2"].body), copy.deepcopy(eng.agents["l3"].body)
        eng.step()
    B = eng.agents["l2"].outboxes[0].sg.B
    W3 = next(m for m in l3.modules() if isinstance(m, torch.nn.Linear)).weight
    assert B.shape == W3.shape and not torch.allclose(B, W3)
    x, h2 = sent["l1-l2"], sent["l2-l3"]
    logits = l3(h2)
    y = labels[-1] if labels[-1].dim() == 2 else F.one_hot(labels[-1], logits.shape[1]).float()
    delta = (F.softmax(logits, dim=1) - y) / x.shape[0]  # dCE/dlogits of the batch-mean loss
    g = delta @ B * 0.5
    torch.testing.assert_close(l2[0].weight - eng.agents["l2"].body[0].weight, (g.T @ x).detach(),
                               rtol=1e-4, atol=1e-6)
    assert g.abs().sum() > 0


def test_fa_feedback_is_fixed_learns_and_differs_from_backprop() -> None:
    raw = chain(interface={"kind": "dni", "sg": {"kind": "fa"}}, train={"ticks": 300, "eval_every": 300,
                                                                          "progress": False})
    eng = Engine(from_dict(raw))
    eng.step()
    fas = [o.sg for a in eng.agents.values() for o in a.outboxes if o.sg is not None]
    before = [d.B.clone() for d in fas]
    out = eng.run(299)
    assert all(list(d.parameters()) == [] for d in fas)  # nothing an optimizer could move
    assert all(torch.equal(b, d.B) for b, d in zip(before, fas))
    assert out["test/accuracy"] > 0.8  # digits, 300 ticks (backprop ~0.95; a zeroed feedback leaves l1, l2 fixed)
    zero = Engine(from_dict(raw, ["interface.sg.scale=0"])).run()
    assert out["test/accuracy"] > zero["test/accuracy"] + 0.1  # 0.92 vs 0.71 when written
    assert -1.0 <= out["sg/l1-l2/cosine"] <= 1.0


@pytest.mark.parametrize("override, key", [("edges.1.latency=1", "edges.l1-l2.latency"),
                                           ("agents.l2.update.unroll=2", "agents.l2.update.unroll")])
def test_bad_fa_settings_name_the_key(override, key) -> None:
    with pytest.raises(ScenarioError) as err:
        Engine(from_dict(chain(interface={"kind": "dni", "sg": {"kind": "fa"}}), [override]))
    assert key in str(err.value) and "\n" not in str(err.value)
