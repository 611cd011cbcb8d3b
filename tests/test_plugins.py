"""Plugins: a user package that registers a model and a task, used from the CLI through the scenario's
``imports`` key or ``--import``; a resumed run imports it again from the resolved scenario.yaml."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from corporation.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin_demo" / "waves.yaml"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), str(ROOT)])}


def cli(*args: str) -> subprocess.CompletedProcess:
    """A fresh process (nothing imported yet), as a user runs it."""
    return subprocess.run([sys.executable, "-m", "corporation", *args], cwd=ROOT, env=ENV, capture_output=True, check=False,
                          text=True, timeout=120)


def test_the_plugin_example_runs_and_resumes_from_the_cli(tmp_path):
    out = tmp_path / "run"
    done = cli("run", str(EXAMPLE), "--out", str(out), "--set", "train.ticks=150", "--set", "device=cpu", "--quiet")
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load((out / "scenario.yaml").read_text())
    assert resolved["imports"] == ["plugin_demo"] and resolved["agents"]["conv"]["model"]["kind"] == "conv1d"
    resumed = cli("resume", str(out), "--set", "train.ticks=300", "--quiet")  # a new process imports it again
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ticks"] == 300 and summary["final"]["test/accuracy"] > 0.5  # 4 classes: chance is 0.25


def test_import_flag_registers_for_validate_show_and_run(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    raw = yaml.safe_load(EXAMPLE.read_text())
    del raw["imports"]
    file = tmp_path / "waves.yaml"
    file.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(file), "--import", "plugin_demo"]) == 0
    assert "ok (plugin_waves: 2 agents, 3 edges)" in capsys.readouterr().out
    assert main(["show", str(file), "--import", "plugin_demo", "--ticks", "4"]) == 0
    assert "conv" in capsys.readouterr().out
    out = tmp_path / "run"
    assert main(["run", str(file), "--import", "plugin_demo", "--out", str(out), "--quiet",
                 "--set", "train.ticks=20", "--set", "train.eval_every=20", "--set", "device=cpu"]) == 0
    assert yaml.safe_load((out / "scenario.yaml").read_text())["imports"] == ["plugin_demo"]


def test_an_import_that_fails_is_one_line_naming_the_module_and_the_key(tmp_path, capsys):
    assert main(["validate", str(EXAMPLE), "--import", "no_such_plugin"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--import no_such_plugin: cannot import plugin module 'no_such_plugin'" in err
    file = tmp_path / "bad.yaml"
    file.write_text(EXAMPLE.read_text().replace("imports: [plugin_demo]", "imports: [plugin_demo, no_such_plugin]"))
    assert main(["validate", str(file), "--set", "imports.0=json"]) == 2
    err = capsys.readouterr().err
    assert f"{file}: imports.1: cannot import plugin module 'no_such_plugin' (ModuleNotFoundError" in err
    assert main(["validate", str(file), "--set", "imports=[not a module]"]) == 2
    assert "imports.0: expected a module name" in capsys.readouterr().err
