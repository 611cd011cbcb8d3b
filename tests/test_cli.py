"""CLI contract: run writes the run folder; validate/show; user errors exit 2 with one line, no traceback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import chain

from corporation.cli import main

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, raw: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_run_writes_scenario_metrics_and_summary(tmp_path):
    path = write(tmp_path, chain())
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--set", "train.ticks=6",
                 "--set", "train.eval_every=3", "--seed", "3"]) == 0
    resolved = yaml.safe_load((out / "scenario.yaml").read_text())
    assert resolved["seed"] == 3 and resolved["train"]["ticks"] == 6
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["tick"] for r in lines] == [3, 6]
    assert {"train/loss", "test/loss", "test/accuracy", "sg/l1-l2/loss", "sg/l1-l2/cosine", "sg/l1-l2/r2"} <= set(lines[-1])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["name"] == "chain" and summary["seed"] == 3 and summary["ticks"] == 6
    assert summary["wall_s"] > 0 and 0 <= summary["final"]["test/accuracy"] <= 1


def test_default_run_folder_and_final_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, chain())
    assert main(["run", str(path), "--set", "train.ticks=2"]) == 0
    assert (tmp_path / "runs" / "chain-0" / "summary.json").is_file()
    printed = capsys.readouterr().out
    assert "test/accuracy" in printed and "run folder: runs/chain-0" in printed


def test_validate_and_show(tmp_path, capsys):
    path = write(tmp_path, chain())
    assert main(["validate", str(path)]) == 0
    assert main(["show", str(path), "--ticks", "6"]) == 0
    out = capsys.readouterr().out
    assert "locked components" in out and "l2  UUUUUU" in out


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    bad = chain()
    bad["agents"]["l2"]["clock"] = {"period": 0}
    assert main(["validate", str(write(tmp_path, bad))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "agents.l2.clock.period: must be >= 1" in err and "s.yaml" in err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    missing = chain(task={"kind": "classification", "dataset": "mnist"})
    assert main(["run", str(write(tmp_path, missing)), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "s.yaml: dataset 'mnist' not found" in err[-1]  # the file named
    assert "CORPORATION_DATA" in err[-1]


def test_no_traceback_from_the_real_entry_point(tmp_path):
    bad = write(tmp_path, {"name": "x", "task": {"kind": "classification"}, "agents": {}, "edges": []})
    proc = subprocess.run([sys.executable, "-m", "corporation", "validate", str(bad)], check=False, capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "agents" in proc.stderr


def test_a_failing_run_keeps_what_it_wrote(tmp_path, capsys):
    """A task that breaks at tick 7 (a registered kind, the public extension point): the run folder keeps the
    lines logged before, the resolved scenario and a summary naming the error."""
    from corporation import from_dict
    from corporation.registry import TASKS
    from corporation.runner import run_scenario
    from corporation.tasks.classification import Classification, ClassificationParams

    class Breaking(Classification):
        def emit(self, tick):
            if tick == 7:
                raise RuntimeError("boom")
            return super().emit(tick)

    if "breaking_digits" not in TASKS:
        TASKS.register("breaking_digits", ClassificationParams)(Breaking)
    out = tmp_path / "run"
    try:
        run_scenario(from_dict(chain(), ["train.eval_every=3", "task.kind=breaking_digits"]), out, quiet=True)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the failure must propagate")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["tick"] for x in lines] == [3, 6]
    # a task class defined inside a function cannot be pickled: the run goes on without checkpoints, saying so
    assert "no checkpoint.pt" in capsys.readouterr().err and not (out / "checkpoint.pt").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ticks"] == 7 and summary["error"] == "RuntimeError: boom"
    assert (out / "scenario.yaml").is_file()
