"""Checkpoints and exact resume (the gold test): a run of N ticks resumed to 2N logs, after tick N, exactly
the lines of an uninterrupted 2N-tick run; ``evaluate DIR`` reproduces the final test metrics; an
interrupted run resumes to the same lines as well."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from corporation import load_run
from corporation.cli import main

ROOT = Path(__file__).resolve().parents[1]

# (scenario, N, --set ...): budgets small enough for CI; eval/log periods chosen so that N is not a
# scheduled log tick everywhere (the end-of-run log at N must not change what follows) and windows are
# open at N (the checkpoint then replays from an earlier snapshot).
GOLD = [
    ("ff_digits", 60, ["train.eval_every=25"]),
    ("corporation", 40, ["train.eval_every=15"]),
    ("copy", 70, ["train.eval_every=30", "task.batch_size=8"]),
    ("hier_rnn", 70, ["train.eval_every=30", "task.test_streams=16"]),
    ("cartpole", 150, ["train.eval_every=100", "train.log_every=40", "task.num_envs=4", "task.test_episodes=2"]),
]


def lines(folder: Path) -> list[str]:
    return (folder / "metrics.jsonl").read_text().splitlines()


def after(records: list[str], tick: int) -> list[str]:
    return [r for r in records if json.loads(r)["tick"] > tick]


def run(args: list[str]) -> int:
    return main([*args, "--quiet"])


@pytest.mark.parametrize("name,n,sets", GOLD, ids=[g[0] for g in GOLD])
def test_resumed_run_logs_exactly_what_an_uninterrupted_run_logs(tmp_path, name, n, sets):
    file = str(ROOT / "scenarios" / f"{name}.yaml")
    common = [x for s in sets for x in ("--set", s)] + ["--set", "device=cpu"]
    full, half = tmp_path / "full", tmp_path / "half"
    assert run(["run", file, "--out", str(full), "--set", f"train.ticks={2 * n}", *common]) == 0
    assert run(["run", file, "--out", str(half), "--set", f"train.ticks={n}", *common]) == 0
    assert (half / "checkpoint.pt").is_file()
    assert run(["resume", str(half), "--set", f"train.ticks={2 * n}"]) == 0
    expected = after(lines(full), n)
    assert expected, "the uninterrupted run must log after tick N"
    assert after(lines(half), n) == expected
    summary = json.loads((half / "summary.json").read_text())
    assert summary["ticks"] == 2 * n and summary["resumed_at"] == [n]
    # evaluate DIR: the composed system of the checkpoint gives the run's final test metrics exactly
    assert run(["evaluate", str(full)]) == 0
    final = json.loads((full / "summary.json").read_text())["final"]
    evaluated = json.loads((full / "eval.json").read_text())
    tests = {k: v for k, v in final.items() if k.startswith("test/")}
    assert tests and {k: evaluated[k] for k in tests} == tests


def test_load_run_returns_a_ready_engine(tmp_path):
    out = tmp_path / "r"
    file = str(ROOT / "scenarios" / "ff_digits.yaml")
    assert run(["run", file, "--out", str(out), "--set", "train.ticks=30", "--set", "train.eval_every=10"]) == 0
    engine = load_run(out)
    assert engine.tick == 30
    final = json.loads((out / "summary.json").read_text())["final"]
    assert engine.evaluate()["test/accuracy"] == final["test/accuracy"]
    engine.run(ticks=5)  # and it trains on
    assert engine.tick == 35


def test_resume_refuses_what_it_cannot_do(tmp_path, capsys):
    out = tmp_path / "r"
    file = str(ROOT / "scenarios" / "ff_digits.yaml")
    assert run(["run", file, "--out", str(out), "--set", "train.ticks=20", "--set", "train.eval_every=10"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    for args, says in [(["resume", str(out)], "nothing to do"),
                       (["resume", str(out), "--set", "train.ticks=40", "--set", "seed=3"], "seed"),
                       (["resume", str(tmp_path / "nope")], "no such run folder"),
                       (["resume", str(tmp_path)], "scenario.yaml")]:
        assert run(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and says in err and "Traceback" not in err, err
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert run(["resume", str(out), "--set", "train.ticks=40"]) == 2
    assert "checkpoint" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "checkpoint.pt"} == \
        {k: v for k, v in before.items() if k != "checkpoint.pt"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_with_a_checkpoint_and_the_run_resumes_exactly(tmp_path, sig):
    file = str(ROOT / "scenarios" / "ff_digits.yaml")
    sets = ["--set", "train.eval_every=50", "--set", "device=cpu"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run(["run", file, "--out", str(full), "--set", "train.ticks=400", *sets]) == 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "corporation", "run", file, "--out", str(cut), "--set",
                             "train.ticks=100000", *sets, "--quiet"], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        metrics = cut / "metrics.jsonl"
        import time

        deadline = time.time() + 120
        while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["interrupted"] is True
    stopped = summary["ticks"]
    assert 100 <= stopped < 400
    assert run(["resume", str(cut), "--set", "train.ticks=400"]) == 0
    assert after(lines(cut), 100) == after(lines(full), 100)
