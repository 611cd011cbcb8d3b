"""The engine logs what main logged before the seams redesign: counters exactly, values to a tolerance that
absorbs another CPU's rounding but not a change of behaviour (tests/golden/record.py)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "golden"
spec = importlib.util.spec_from_file_location("golden_record", HERE / "record.py")
golden = importlib.util.module_from_spec(spec)
sys.modules["golden_record"] = golden
spec.loader.exec_module(golden)


@pytest.mark.parametrize("name", list(golden.CASES))
def test_metrics_match_the_recorded_golden_lines(name):
    want = (HERE / f"{name}.jsonl").read_text().splitlines()
    assert len(want) >= 2
    got = golden.record(name)
    for i, (a, b) in enumerate(zip(want, got)):
        key = golden.differs(a, b)
        assert key is None, f"{name}: line {i + 1} differs at {key}\ngolden: {a[:400]}\nnow:    {b[:400]}"
    assert len(got) == len(want)


@pytest.mark.parametrize("name, change", [
    ("ff_digits", "agents.l1.optimizer.lr=1.1e-3"),  # one agent's lr 10% higher
    ("hier_rnn", "interface.sg.normalize=true"),  # a shipped default the case pins off
    ("copy", "agents.lstm.state.sg.gamma=0.9"),  # a discounted bootstrap
])
def test_a_small_change_of_behaviour_is_caught(name, change):
    want = (HERE / f"{name}.jsonl").read_text().splitlines()
    got = golden.record(name, (change,))
    assert any(golden.differs(a, b) is not None for a, b in zip(want, got))
