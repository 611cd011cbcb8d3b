"""Run folders are never overwritten, are locked, hold whole lines; a diverged run stops with its own exit code."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import chain

from corporation.cli import main

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, raw: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_default_folders_are_never_reused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    f = str(write(tmp_path, chain()))
    assert main(["run", f, "--set", "train.ticks=4"]) == 0
    first = digest(tmp_path / "runs" / "chain-0")
    assert main(["run", f, "--set", "train.ticks=4", "--set", "interface.kind=backprop"]) == 0
    assert "run folder: runs/chain-0-2" in capsys.readouterr().err
    assert main(["run", f, "--set", "train.ticks=4", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["chain-0", "chain-0-2", "chain-0-3"]
    assert digest(tmp_path / "runs" / "chain-0") == first
    resolved = yaml.safe_load((tmp_path / "runs" / "chain-0-2" / "scenario.yaml").read_text())
    assert resolved["edges"][1]["interface"]["kind"] == "backprop"


def test_out_holding_a_run_is_refused_unless_overwrite(tmp_path, capsys):
    f = str(write(tmp_path, chain()))
    out = tmp_path / "r"
    assert main(["run", f, "--out", str(out), "--set", "train.ticks=4", "--quiet"]) == 0
    before = digest(out)
    capsys.readouterr()
    assert main(["run", f, "--out", str(out), "--set", "train.ticks=6", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already holds a run" in err and "--overwrite" in err
    assert digest(out) == before
    assert main(["run", f, "--out", str(out), "--set", "train.ticks=6", "--quiet", "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["ticks"] == 6


def test_a_run_failing_at_start_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    missing = chain(task={"kind": "classification", "dataset": "mnist", "data_dir": str(tmp_path / "none")})
    f = str(write(tmp_path, missing))
    assert main(["run", f, "--quiet"]) == 2
    assert not (tmp_path / "runs").exists()
    assert main(["run", f, "--quiet", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    err = capsys.readouterr().err
    assert "mnist" in err and "Traceback" not in err


def test_a_second_concurrent_run_on_one_folder_is_refused(tmp_path, capsys):
    f = str(write(tmp_path, chain()))
    out = tmp_path / "r"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(f"{proc.pid}\n")  # a live process holds the folder
        assert main(["run", f, "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"process {proc.pid}" in err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        proc.kill()
        proc.wait()
    assert main(["run", f, "--out", str(out), "--quiet", "--set", "train.ticks=2"]) == 0  # a stale lock is taken over
    assert not (out / ".lock").exists()


def test_metrics_hold_whole_lines_and_files_are_written_atomically(tmp_path):
    f = str(write(tmp_path, chain()))
    out = tmp_path / "r"
    assert main(["run", f, "--out", str(out), "--quiet", "--set", "train.ticks=20", "--set", "train.log_every=2"]) == 0
    text = (out / "metrics.jsonl").read_text()
    assert text.endswith("\n") and all(json.loads(x) for x in text.splitlines())
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert {"scenario.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt", "accuracy.png"} <= set(os.listdir(out))


@pytest.mark.parametrize("sets,where", [
    (["interface.sg.scale=1.0e+30"], "M loss on edge l1 -> l2"),
    (["agents.l2.model.batchnorm=false", "agents.l1.model.batchnorm=false", "interface.kind=backprop",
      *(f"agents.{a}.optimizer.lr=1.0e+30" for a in ("l1", "l2", "l3"))], "metric test/loss"),
    (["interface.sg.scale=1.0e+30", "interface.sg.warmup=6"], "edge l1 -> l2"),  # diverges after checkpoints
])
def test_a_diverged_run_stops_with_exit_3_naming_where_and_when(tmp_path, capsys, sets, where):
    f = str(write(tmp_path, chain()))
    out = tmp_path / "r"
    args = ["run", f, "--out", str(out), "--quiet", "--set", "train.ticks=200", "--set", "train.eval_every=1",
            "--set", "agents.l3.optimizer.lr=1.0e-3"]
    code = main(args + [x for s in sets for x in ("--set", s)])
    err = capsys.readouterr().err.strip()
    assert code == 3, err
    assert err.count("\n") == 0 and "diverged at tick" in err and where in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diverged"]["tick"] >= 0 and where in summary["diverged"]["what"]
    for record in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()):
        assert None not in record.values()  # nothing non-finite was logged
    if any("warmup" in s for s in sets):  # the last good checkpoint stays, from before the divergence
        import torch

        ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
        assert 0 < ckpt["tick"] <= summary["diverged"]["tick"]
        assert main(["evaluate", str(out), "--quiet"]) == 0


def test_a_non_finite_value_never_gets_to_training(tmp_path, capsys):
    for value in (".inf", ".nan"):
        assert main(["validate", str(write(tmp_path, chain())), "--set", f"agents.l1.optimizer.lr={value}"]) == 2
        assert "agents.l1.optimizer.lr" in capsys.readouterr().err
