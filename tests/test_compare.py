"""``plot`` and ``compare`` on run folders: seeds of one scenario are grouped (mean and spread), other runs
are told apart by what differs, and a folder that is not a run is a one-line error."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from corporation.cli import main

ROOT = Path(__file__).resolve().parents[1]
FILE = str(ROOT / "scenarios" / "ff_digits.yaml")
SETS = ["--set", "device=cpu", "--set", "train.ticks=40", "--set", "train.eval_every=20", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, extra in [("dni0", ["--seed", "0"]), ("dni1", ["--seed", "1"]),
                        ("bp0", ["--seed", "0", "--set", "interface.kind=backprop"])]:
        out[name] = root / name
        assert main(["run", FILE, "--out", str(out[name]), *SETS, *extra]) == 0
    return out


def _final(folder: Path, key: str) -> float:
    return json.loads((folder / "summary.json").read_text())["final"][key]


def test_compare_prints_final_metrics_side_by_side_with_seeds_grouped(runs, capsys):
    assert main(["compare", str(runs["dni0"]), str(runs["dni1"]), str(runs["bp0"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "ff_digits (interface.kind=dni)" in lines[0] and "ff_digits (interface.kind=backprop)" in lines[0]
    acc = next(line for line in lines if line.startswith("test/accuracy")).split()
    dni = [_final(runs[n], "test/accuracy") for n in ("dni0", "dni1")]
    assert acc[1] == f"{statistics.mean(dni):.4g}"
    if len(set(dni)) > 1:
        assert acc[2:4] == ["±", f"{statistics.stdev(dni):.2g}"]
    assert acc[-1] == f"{_final(runs['bp0'], 'test/accuracy'):.4g}"
    assert next(line for line in lines if line.startswith("runs")).split()[2:] == ["2", "(0,", "1)", "1", "(0)"]


def test_plot_writes_one_image_of_the_chosen_metrics(runs, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    folders = [str(runs[n]) for n in ("dni0", "dni1", "bp0")]
    assert main(["plot", *folders, "--metric", "test/accuracy", "--metric", "train/loss", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.strip() == f"wrote {out}"


def test_plot_groups_average_the_seeds_and_span_them():
    from corporation.plots import group_curve

    ticks, mean, low, high = group_curve([{1: 0.0, 2: 1.0, 3: 5.0}, {1: 2.0, 2: 3.0}])
    assert (ticks, mean, low, high) == ([1, 2], [1.0, 2.0], [0.0, 1.0], [2.0, 3.0])


@pytest.mark.parametrize("command", ["plot", "compare"])
def test_a_folder_that_is_not_a_run_is_one_line(tmp_path, command, capsys):
    (tmp_path / "empty").mkdir()
    assert main([command, str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run folder (no scenario.yaml)" in err and str(tmp_path) in err
    assert main([command, str(tmp_path / "absent")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_an_unknown_metric_or_image_type_is_one_line(runs, tmp_path, capsys):
    assert main(["compare", str(runs["dni0"]), "--metric", "test/acuracy"]) == 2
    assert "did you mean 'test/accuracy'" in capsys.readouterr().err
    assert main(["plot", str(runs["dni0"]), "--out", str(tmp_path / "x.txt")]) == 2
    assert ".png, .pdf, .svg" in capsys.readouterr().err


def test_an_rl_run_folder_gets_a_return_curve(tmp_path):
    out = tmp_path / "cartpole"
    assert main(["run", str(ROOT / "scenarios" / "cartpole.yaml"), "--out", str(out), "--quiet", "--set",
                 "train.ticks=100", "--set", "train.eval_every=50", "--set", "train.log_every=25", "--set",
                 "task.num_envs=4", "--set", "task.test_episodes=1"]) == 0
    assert (out / "return.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (out / "accuracy.png").exists()
