"""One seeded learning test per interface kind on real digits; each fails if its learning rule breaks.

Reference point: "no backprop" (M's output never applied: only the last agent learns). DNI and cDNI must
beat it by a wide margin on training loss; zeroing or corrupting the synthetic gradient makes them fail.
"""
from __future__ import annotations

from conftest import chain

from corporation import Engine, from_dict

BASE = ["task.batch_size=128", "agents.l1.model.out=64", "agents.l2.model.out=64"]


def train(overrides: list[str], ticks: int = 120) -> dict:
    """Train for ``ticks``; training metrics over the last 20 ticks, then the test metrics."""
    eng = Engine(from_dict(chain(), BASE + overrides))
    for _ in range(ticks - 20):
        eng.step()
    eng.task.train_metrics()
    for _ in range(20):
        eng.step()
    return {**eng.task.train_metrics(), **eng.evaluate()}


def test_backprop_learns_digits():
    r = train(["interface.kind=backprop"])
    assert r["test/accuracy"] >= 0.93, r


def test_dni_beats_no_backprop():
    base = train(["interface.sg.scale=0"])
    dni = train([])
    assert dni["train/loss"] < 0.5 * base["train/loss"], (dni, base)
    assert dni["test/accuracy"] >= 0.9, dni


def test_cdni_beats_no_backprop():
    base = train(["interface.sg.scale=0", "interface.context=task.y"])
    cdni = train(["interface.context=task.y"])
    assert cdni["train/loss"] < 0.5 * base["train/loss"], (cdni, base)
    assert cdni["test/accuracy"] >= 0.9, cdni
