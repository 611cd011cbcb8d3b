"""experiments/rnn.py reuses a finished run only if it was made with the same --set values."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "rnn.py"


def _module():
    spec = importlib.util.spec_from_file_location("rnn_experiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("rnn_experiment", module)
    spec.loader.exec_module(module)
    return module


def test_ran_with_compares_the_resolved_scenario(tmp_path: Path) -> None:
    rnn = _module()
    (tmp_path / "scenario.yaml").write_text(
        "train: {ticks: 400}\nagents:\n  lstm:\n    update: {unroll: 2}\n"
        "    state: {kind: dni, aux: true, aux_weight: 0.1, aux_input: h}\n", encoding="utf-8")
    same = ["agents.lstm.update.unroll=2", "train.ticks=400", "agents.lstm.state.aux=true"]
    assert rnn.ran_with(tmp_path, same)
    assert not rnn.ran_with(tmp_path, [*same, "agents.lstm.state.aux_weight=0.01"])
    assert not rnn.ran_with(tmp_path, [*same, "agents.lstm.state.aux_input=state"])
    assert not rnn.ran_with(tmp_path, ["agents.lstm.state.missing=1"])
    assert not rnn.ran_with(tmp_path / "absent", same)
