"""Task digit_counting: targets on hand-made sequences, loss-port timing, evaluation scoring, checks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import corporation  # noqa: F401  (registers the built-in kinds)
from corporation import ScenarioError
from corporation.scenario import load
from corporation.tasks.digit_counting import DigitCounting, DigitCountingParams, counts

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_counts_on_a_hand_made_sequence():
    labels = torch.tensor([[1, 3, 2, 3, 5, 0, 3, 3, 8, 9]])
    a, b = counts(labels, 2)
    # odd digits in the last 2 ticks (-1 before the first full window)
    assert a.tolist() == [[-1, 2, 1, 1, 2, 1, 1, 2, 1, 1]]
    # 3s in the last 4 ticks
    assert b.tolist() == [[-1, -1, -1, 2, 2, 1, 2, 2, 2, 2]]


def fake_task(monkeypatch, T: int, streams: int = 5) -> DigitCounting:
    """A task whose 'images' are one-hot labels, so the emitted input tells which digit was drawn."""
    x = torch.eye(10).repeat(3, 1).numpy()
    y = torch.arange(10).repeat(3).numpy()
    monkeypatch.setattr("corporation.tasks.datasets.load", lambda name, data_dir=None: (x, y, x, y))
    params = DigitCountingParams(T=T, batch_size=streams, clock_input=False, test_streams=7)
    return DigitCounting(params, torch.device("cpu"), torch.Generator().manual_seed(0))


@pytest.mark.parametrize("T", [2, 3])
def test_emitted_targets_match_a_hand_count(monkeypatch, T):
    task = fake_task(monkeypatch, T)
    labels = []
    for t in range(4 * T * T):
        x = task.emit(t).inputs["x"][:, :10]
        labels.append(x.argmax(1))
        a, b = task.target("a", t), task.target("b", t)
        if (t + 1) % T == 0:
            want = sum(int(v) % 2 for v in [lab[0] for lab in labels[-T:]])
            assert a is not None and int(a[0]) == want
            assert a.tolist() == [sum(int(lab[s]) % 2 for lab in labels[-T:]) for s in range(5)]
        else:
            assert a is None, f"A has a target only every T ticks (t={t})"
        if t >= T * T - 1:
            assert b.tolist() == [sum(int(lab[s] == 3) for lab in labels[-T * T:]) for s in range(5)]
        else:
            assert b is None, f"B has no target before T² ticks (t={t})"


def test_loss_is_none_without_a_target_and_cross_entropy_with_one(monkeypatch):
    task = fake_task(monkeypatch, 2)
    task.emit(0)
    assert task.loss("a", 0, torch.zeros(5, 3)) is None
    assert task.loss("b", 0, torch.zeros(5, 5)) is None
    task.emit(1)
    logits = torch.randn(5, 3)
    assert torch.allclose(task.loss("a", 1, logits), F.cross_entropy(logits, task.target("a", 1)))
    assert task.train_metrics()["train/A/accuracy"] == pytest.approx(
        float((logits.argmax(1) == task.target("a", 1)).float().mean()))


def test_clock_input_marks_the_phase(monkeypatch):
    task = fake_task(monkeypatch, 3)
    task.params.clock_input = True
    assert task.emit(4).inputs["x"][:, 10:].tolist() == [[0.0, 1.0, 0.0]] * 5


class Oracle:
    """A composed 'system' that answers the true counts (or a constant) only at its agents' ticks."""

    def __init__(self, task: DigitCounting, wrong: bool = False):
        self.task, self.wrong, self.calls, self.resets = task, wrong, [], 0
        _, labels = task.test_streams()
        self.a, self.b = counts(labels, task.T)

    def reset_state(self) -> None:
        self.resets += 1

    def compose(self, inputs, tick=None, synthetic=False):
        T = self.task.T
        self.calls.append(tick)
        out = {"a": F.one_hot(self.a[:, tick].clamp(min=0), T + 1).float() * 10}
        if tick % T == T - 1:
            target = torch.zeros_like(self.b[:, tick]) if self.wrong else self.b[:, tick].clamp(min=0)
            out["b"] = F.one_hot(target, T * T + 1).float() * 10
        return out


def test_evaluate_scores_each_network_at_its_target_ticks(monkeypatch):
    task = fake_task(monkeypatch, 2)
    oracle = Oracle(task)
    r = task.evaluate(oracle)
    assert oracle.resets == 1 and oracle.calls == list(range(task.params.eval_ticks))
    assert r["test/A/accuracy"] == 1.0 and r["test/B/accuracy"] == 1.0 and r["test/B/mae"] == 0.0
    wrong = task.evaluate(Oracle(task, wrong=True))
    _, labels = task.test_streams()
    _, b = counts(labels, 2)
    scored = b[:, 3::2]  # B's ticks with a full T² window: 3, 5, 7, ...
    assert wrong["test/B/accuracy"] == pytest.approx(float((scored == 0).float().mean()))
    assert wrong["test/B/mae"] == pytest.approx(float(scored.float().mean()))
    assert wrong["test/B/majority"] == pytest.approx(float(scored.flatten().bincount().max()) / scored.numel())


def test_test_streams_are_fixed_across_seeds(monkeypatch):
    one = fake_task(monkeypatch, 2).test_streams()[0]
    other = DigitCounting(fake_task(monkeypatch, 2).params, torch.device("cpu"), torch.Generator().manual_seed(9))
    assert torch.equal(one, other.test_streams()[0])


def test_bad_keys_are_one_line_scenario_errors():
    path = ROOT / "scenarios" / "hier_rnn.yaml"
    with pytest.raises(ScenarioError, match=r"task\.T: must be >= 1"):
        load(path, ["task.T=0"])
    with pytest.raises(ScenarioError, match=r"agents\.B\.clock: 'B' feeds task\.b, so it must tick every T = 8"):
        load(path, ["task.T=8"])
    with pytest.raises(ScenarioError, match=r"agents\.A\.clock: 'A' feeds task\.a"):
        load(path, ["agents.A.clock.period=3"])
    with pytest.raises(ScenarioError, match=r"task\.dataset: unknown dataset 'digit'"):
        load(path, ["task.dataset=digit"])
