"""corporation.report, the experiment scripts' shared helper: a run folder is reused only for the same
settings, pages keep their hand-written block, JSON measurements are computed once."""
from __future__ import annotations

import json
from pathlib import Path

from corporation.report import Cell, cached_run, json_cached, mean_sd, ran_with, reusable, write_page

ROOT = Path(__file__).resolve().parents[1]
SETS = ["device=cpu", "train.ticks=6", "train.eval_every=6", "task.batch_size=32"]


def test_a_finished_run_is_reused_only_for_the_same_settings(tmp_path):
    cell = Cell(tmp_path / "run", file=ROOT / "scenarios" / "ff_digits.yaml", sets=SETS)
    run, reused = cached_run(cell)
    assert not reused and run.final["tick"] == 6 and 0.0 <= run.final["test/accuracy"] <= 1.0
    stamp = (cell.folder / "summary.json").stat().st_mtime_ns
    again, reused = cached_run(cell)
    assert reused and again.final == run.final and (cell.folder / "summary.json").stat().st_mtime_ns == stamp
    assert ran_with(cell.folder, ["train.ticks=6", "edges.1.dst=l2"])
    assert not ran_with(cell.folder, ["train.ticks=7"])
    assert not reusable(Cell(cell.folder, file=cell.file, sets=[*SETS, "seed=1"]))  # another setting: rerun
    assert not reusable(Cell(cell.folder, file=cell.file, sets=[*SETS, "interface.sg.scale=0.5"]))
    assert reusable(Cell(cell.folder, file=cell.file, sets=[*SETS, "train.progress=false"]))  # changes nothing
    summary = json.loads((cell.folder / "summary.json").read_text())
    (cell.folder / "summary.json").write_text(json.dumps({**summary, "interrupted": True}))
    assert not reusable(cell)  # an interrupted run is not reused either


def test_a_page_keeps_its_hand_written_block(tmp_path):
    page = tmp_path / "page.md"
    write_page(page, "# v1\n", "<!-- notes -->", "<!-- /notes -->")
    assert page.read_text() == "# v1\n\n<!-- notes -->\n(to be written)\n<!-- /notes -->\n"
    page.write_text(page.read_text().replace("(to be written)", "my reading") + "trailing\n")
    write_page(page, "# v2\n", "<!-- notes -->", "<!-- /notes -->")
    assert page.read_text() == "# v2\n\n<!-- notes -->\nmy reading\n<!-- /notes -->\n"
    write_page(page, "# v3", "<!-- notes -->")  # no end marker: everything from the marker on is kept
    assert page.read_text() == "# v3\n\n<!-- notes -->\nmy reading\n<!-- /notes -->\n"


def test_json_measurements_are_computed_once(tmp_path):
    calls = []
    path = tmp_path / "m.json"
    assert json_cached(path, lambda: calls.append(1) or {"ms": 1.5}) == {"ms": 1.5}
    assert json_cached(path, lambda: calls.append(1) or {"ms": 9.0}) == {"ms": 1.5}
    assert calls == [1]


def test_cells_over_seeds():
    assert mean_sd([]) == "–" and mean_sd([2.0]) == "2.0" and mean_sd([1.0, 3.0]) == "2.0 ± 1.4"
