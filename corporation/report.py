"""The experiment scripts' shared helper (``experiments/*.py``): run folders as a cache, results pages.

- :func:`cached_run` trains a scenario into a run folder (``python -m corporation run`` in a subprocess, one
  thread) unless the folder already holds a finished run of the same settings, and returns it as a
  :class:`~corporation.compare.Run` (its records and final metrics). :func:`cached_runs` does many, ``jobs``
  at a time. The folders are ordinary run folders: ``python -m corporation plot`` / ``compare`` read them.
- :func:`json_cached` keeps a measurement that is not a run (a script's own timing) as a JSON file.
- :func:`write_page` (re)writes a Markdown page, keeping its hand-written block between markers.
- :func:`mean_sd` formats a table cell over seeds.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .compare import Run, read_run
from .errors import CorporationError

IGNORED_KEYS = ("train.progress", "imports")  # differences that never change what a run computes


@dataclass
class Cell:
    """One run of an experiment grid: a scenario file or plain scenario data, ``--set`` overrides, a folder."""

    folder: Path
    file: Path | None = None
    raw: dict[str, Any] | None = None
    sets: list[str] = field(default_factory=list)


def _get(data: Any, key: str) -> tuple[bool, Any]:
    node = data
    for part in key.split("."):
        if isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False, None
    return True, node


def ran_with(folder: Path, sets: Iterable[str]) -> bool:
    """Whether the run in ``folder`` (its resolved scenario.yaml) has every ``key=value`` of ``sets``."""
    path = Path(folder) / "scenario.yaml"
    if not path.is_file():
        return False
    resolved = yaml.safe_load(path.read_text(encoding="utf-8"))
    for item in sets:
        key, value = item.split("=", 1)
        found, got = _get(resolved, key)
        if not found or got != yaml.safe_load(value):
            return False
    return True


def _agrees(old: Any, new: Any, path: str = "") -> bool:
    """``new`` has ``old``'s value at every key ``old`` has (keys ``old`` lacks are newer defaults)."""
    if path in IGNORED_KEYS:
        return True
    if isinstance(old, dict) and isinstance(new, dict):
        return all(k not in new or _agrees(v, new[k], f"{path}.{k}" if path else str(k)) for k, v in old.items())
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return all(_agrees(a, b, f"{path}.{i}") for i, (a, b) in enumerate(zip(old, new)))
    return old == new


def finished(folder: Path) -> bool:
    """Whether ``folder`` holds a run that ended normally (a summary, not interrupted, no error)."""
    try:
        summary = json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and not any(k in summary for k in ("interrupted", "error", "diverged"))


def _resolved(cell: Cell) -> dict[str, Any]:
    from .scenario import from_dict, load, plain

    scenario = load(cell.file, cell.sets) if cell.file is not None else from_dict(cell.raw, cell.sets)
    return plain(scenario)


def reusable(cell: Cell) -> bool:
    """A finished run in the cell's folder whose resolved scenario agrees with the cell's."""
    if not finished(cell.folder):
        return False
    old = yaml.safe_load((cell.folder / "scenario.yaml").read_text(encoding="utf-8"))
    return _agrees(old, _resolved(cell))


def cached_run(cell: Cell) -> tuple[Run, bool]:
    """The cell's run (trained now unless :func:`reusable`) and whether it was reused. A failed run raises
    :class:`CorporationError` with the CLI's one-line error."""
    if reusable(cell):
        return read_run(cell.folder), True
    cell.folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        file = cell.file
        if file is None:
            file = Path(tmp) / "scenario.yaml"
            file.write_text(yaml.safe_dump(cell.raw, sort_keys=False), encoding="utf-8")
        cmd = [sys.executable, "-m", "corporation", "run", str(file), "--out", str(cell.folder), "--overwrite",
               "--quiet", *[a for s in cell.sets for a in ("--set", s)]]
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise CorporationError(f"{cell.folder.name}: run failed ({lines[-1] if lines else done.returncode})")
    return read_run(cell.folder), False


def cached_runs(cells: list[Cell], jobs: int = 1, log: bool = True) -> list[Run]:
    """Every cell's run, ``jobs`` subprocesses at a time (each single-threaded), in the cells' order."""
    def one(cell: Cell) -> Run:
        run, reused = cached_run(cell)
        if log:
            wall = json.loads((cell.folder / "summary.json").read_text())["wall_s"]
            print(f"{cell.folder.name}: {'reused' if reused else f'{wall:.0f} s'}", flush=True)
        return run

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(one, cells))


def json_cached(path: Path, compute: Callable[[], Any]) -> Any:
    """``compute()``'s result, stored as JSON at ``path`` and read back from there when it exists: for a
    measurement a run folder does not hold (e.g. a script's own timing of training without evaluation)."""
    path = Path(path)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return result


def mean_sd(values: list[float], fmt: str = ".1f") -> str:
    """``m`` for one value, ``m ± sd`` over several, ``–`` for none."""
    if not values:
        return "–"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def write_page(path: Path, text: str, start: str, end: str | None = None, placeholder: str = "(to be written)") -> None:
    """Write ``text`` to ``path`` followed by the hand-written block of the old page: from marker ``start`` to
    marker ``end`` (included), or to the end of the page when ``end`` is None; a new page gets
    ``start``, ``placeholder`` (and ``end``)."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if start in old and (end is None or end in old[old.index(start):]):
        kept = old[old.index(start):]
        if end is not None:
            kept = kept[: kept.index(end) + len(end)]
    else:
        kept = "\n".join([start, placeholder, *([end] if end else [])])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n\n" + kept.rstrip("\n") + "\n", encoding="utf-8")
