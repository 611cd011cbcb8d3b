"""TensorBoard event files in a run folder: every logged metric as a scalar, g_hat histograms per dni edge
at evaluation, no change to any metric, and a resumed run appends to the same folder without duplicates."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from corporation import Engine, load
from corporation.cli import main

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
FILE = str(ROOT / "scenarios" / "ff_digits.yaml")
SETS = ["device=cpu", "train.eval_every=20", "edges.1.latency=1"]  # latency 1: M's records wait at evaluation


def _args(sets: list[str]) -> list[str]:
    return [x for s in sets for x in ("--set", s)]


def _events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def _scalars(acc: EventAccumulator) -> dict[str, dict[int, float]]:
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_every_metric_is_a_scalar_and_dni_edges_get_histograms(tmp_path):
    out = tmp_path / "run"
    assert main(["run", FILE, "--out", str(out), "--quiet", *_args([*SETS, "train.ticks=60"])]) == 0
    records = _records(out)
    # the event files change nothing: the run logs what the engine alone logs
    engine_records = []
    Engine(load(FILE, [*SETS, "train.ticks=60"])).run(on_log=engine_records.append)
    assert records == [json.loads(json.dumps(r)) for r in engine_records]
    scalars = _scalars(_events(out))
    for r in records:
        for k, v in r.items():
            if k != "tick":
                assert scalars[k][r["tick"]] == pytest.approx(v, rel=1e-6, abs=1e-6), k
    acc = _events(out)
    assert "sg/l1-l2/g_hat" in acc.Tags()["histograms"]
    steps = [h.step for h in acc.Histograms("sg/l1-l2/g_hat")]
    assert steps == [r["tick"] for r in records if any(k.startswith("test/") for k in r)]
    assert all(h.histogram_value.num > 0 for h in acc.Histograms("sg/l1-l2/g_hat"))


def test_a_resumed_run_appends_to_the_same_event_files_without_duplicates(tmp_path):
    """A run killed after logging past its last checkpoint (simulated: a 60-tick run's folder with the
    checkpoint a run stopped at tick 30 leaves) resumes: each tick is in the events once, as logged again."""
    sets = _args([*SETS, "train.log_every=10"])
    early, killed = tmp_path / "early", tmp_path / "killed"
    assert main(["run", FILE, "--out", str(early), "--quiet", *sets, "--set", "train.ticks=30"]) == 0
    assert main(["run", FILE, "--out", str(killed), "--quiet", *sets, "--set", "train.ticks=60"]) == 0
    want = _events(killed)
    want_scalars = {tag: [(e.step, e.value) for e in want.Scalars(tag)] for tag in want.Tags()["scalars"]}
    want_hist = {tag: [h.step for h in want.Histograms(tag)] for tag in want.Tags()["histograms"]}
    (killed / "checkpoint.pt").write_bytes((early / "checkpoint.pt").read_bytes())
    assert main(["resume", str(killed), "--quiet"]) == 0
    assert len(list(killed.glob("events.out.tfevents.*"))) == 2
    got = _events(killed)
    assert {tag: [(e.step, e.value) for e in got.Scalars(tag)] for tag in got.Tags()["scalars"]} == want_scalars
    assert {tag: [h.step for h in got.Histograms(tag)] for tag in got.Tags()["histograms"]} == want_hist
    assert max(want_hist["sg/l1-l2/g_hat"]) == 60


def test_without_tensorboard_the_run_goes_on_and_says_so_once(tmp_path):
    """A broken or missing tensorboard package (here: one whose import fails) costs the event files only."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "site" / "tensorboard"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('tensorboard is not installed')\n")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", "corporation", "run", FILE, "--out", str(out),
                           *_args([*SETS, "train.ticks=20"])], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("no TensorBoard event files") == 1 and "pip install tensorboard" in done.stderr
    assert not list(out.glob("events.out.tfevents.*")) and (out / "summary.json").is_file()
