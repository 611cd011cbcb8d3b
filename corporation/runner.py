"""Running a scenario to a run folder: the IO edge (files, signals, progress bar, final table).

A run checks the device, the data and the out folder before it creates anything, then writes
``DIR/scenario.yaml`` (resolved), appends ``metrics.jsonl`` line by line (flushed), writes ``checkpoint.pt``
after every evaluation, TensorBoard event files (:mod:`corporation.tensorboard`), and ``summary.json`` and
``accuracy.png`` (``return.png`` for RL) at the end (atomically; a plotting
failure only warns). Folder rules (never overwritten, locked) are in :mod:`corporation.runfolder`.

Stopping: SIGINT (Ctrl-C) and SIGTERM end the run after the current tick with a checkpoint and a summary
marked ``"interrupted": true`` (a second signal stops at once; the last checkpoint stays). A non-finite
number stops the run with :class:`~corporation.guard.Diverged` (summary ``"diverged"``; the last good
checkpoint stays). CPU runs use one intra-op thread unless OMP_NUM_THREADS is set (agents are small: more
threads only add synchronisation, badly so on shared cores).
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import torch

from .builders import resolve
from .engine import Engine
from .errors import CorporationError, ScenarioError
from .guard import Diverged
from .runfolder import RunFolder, RunFolderError, check_out, claim_default, open_folder, os_problem
from .scenario import dump, load, plain
from .spec import Scenario
from .tensorboard import EventLog

RESUMABLE_KEYS = ("ticks", "progress")  # the train keys `resume --set` may change


class Progress:
    """A one-line progress bar on a terminal (tqdm); silent when stderr is not a terminal."""

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None, initial: int = 0):
        self.bar = None
        stream = stream or sys.stderr
        if enabled and stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="tick", file=stream, dynamic_ncols=True,
                            leave=False)

    def update(self, tick: int, postfix: dict[str, float] | None = None) -> None:
        if self.bar is None:
            return
        self.bar.update(tick - self.bar.n)
        if postfix:
            self.bar.set_postfix({k.split("/", 1)[-1]: f"{v:.3g}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_eval_key(key: str) -> bool:
    return key.startswith(("test/", "valid/"))


def _is_eval(record: dict[str, Any]) -> bool:
    return any(_is_eval_key(k) for k in record)


class StopFlag:
    """Set by the first SIGINT / SIGTERM: the run ends after the current tick. A second signal raises
    KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def _one_thread(engine: Engine) -> None:
    if engine.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)  # small agents: one intra-op thread is fastest, and robust on shared cores


def run_scenario(scenario: Scenario, out: Path | None = None, device: str | None = None,
                 progress: bool | None = None, quiet: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train ``scenario`` and write its run folder (default: the first free ``runs/<name>-<seed>[-k]``);
    returns the summary. Raises :class:`Diverged` after writing the folder when the run diverged. A scenario
    built from the dataclasses is validated and merged first, as its file would be (:func:`resolve`)."""
    scenario = resolve(scenario)
    if out is not None:
        out = Path(out)
        check_out(out, overwrite)
    engine = Engine(scenario, device=device, checkpoints=True)  # device and data are checked here
    _one_thread(engine)
    path = out if out is not None else claim_default(scenario.name, scenario.seed)
    if not quiet:
        print(f"run folder: {path}", file=sys.stderr)
    with open_folder(path, overwrite=overwrite) as folder:
        folder.write_text("scenario.yaml", dump(scenario))
        return _train(engine, folder, folder.metrics(), progress, quiet, {})


def _train(engine: Engine, folder: RunFolder, metrics: Any, progress: bool | None, quiet: bool,
           before: dict[str, Any]) -> dict[str, Any]:
    """The shared loop of ``run`` and ``resume``: train to ``train.ticks``, then summary, plot, table."""
    scenario = engine.scenario
    final: dict[str, Any] = dict(before.get("final", {}))
    shown: dict[str, Any] = {}
    bar = Progress(scenario.train.ticks, scenario.train.progress if progress is None else progress,
                   initial=engine.tick)
    started = time.perf_counter()
    stop = StopFlag()
    failure: BaseException | None = None
    events = EventLog(folder.path, resumed_at=engine.tick if before else None, quiet=quiet)

    def on_log(record: dict[str, Any]) -> None:
        record = {k: _clean(v) for k, v in record.items()}
        metrics.write(record)
        events.scalars(record)
        if _is_eval(record):
            events.histograms(engine, record["tick"])
        # the final table: the last record, plus the last evaluation's metrics (a metric absent from the last
        # record, e.g. an M that got no target since the log before, is absent here too, never stale)
        evaluated = {k: v for k, v in (record if _is_eval(record) else final).items() if _is_eval_key(k)}
        final.clear()
        final.update({**evaluated, **record})
        shown.update({k: v for k, v in record.items() if k.startswith("test/") and k.endswith("accuracy")})
        for key, label in (("train/episode_return", "return"), ("test/episode_return", "test_return")):
            if isinstance(record.get(key), (int, float)):  # RL: the return in the progress bar
                shown[label] = record[key]

    def on_checkpoint(ckpt: dict[str, Any]) -> None:
        folder.write_atomic("checkpoint.pt", lambda p: torch.save(ckpt, p))

    try:
        with stop.installed():
            engine.run(ticks=scenario.train.ticks - engine.tick, on_log=on_log,
                       on_tick=lambda t: bar.update(t, shown), on_checkpoint=on_checkpoint, stop=stop)
            if stop() and not engine.cannot_checkpoint:
                on_checkpoint(engine.checkpoint())

    except (KeyboardInterrupt, Exception) as e:  # noqa: BLE001  (keep what was written, record why, re-raise)
        failure = e
    finally:
        bar.close()
        metrics.close()
        events.close()
    if engine.cannot_checkpoint:
        print(f"warning: no checkpoint.pt, so this run cannot be resumed ({engine.cannot_checkpoint})",
              file=sys.stderr)
    summary = {"name": scenario.name, "seed": scenario.seed, "ticks": engine.tick,
               "wall_s": round(before.get("wall_s", 0.0) + time.perf_counter() - started, 3),
               "device": str(engine.device), "final": {k: v for k, v in final.items() if k != "tick"}}
    if before:
        summary["resumed_at"] = [*before.get("resumed_at", []), before.get("ticks", 0)]
    if stop() or isinstance(failure, KeyboardInterrupt):
        summary["interrupted"] = True
    elif isinstance(failure, Diverged):
        summary["diverged"] = {"tick": failure.tick, "what": failure.what}
        summary["error"] = str(failure)
    elif failure is not None:
        summary["error"] = f"{type(failure).__name__}: {failure}"
    try:
        folder.write_json("summary.json", summary)
    except RunFolderError:
        if failure is None:
            raise
    _plot(folder, f"{scenario.name} (seed {scenario.seed})")
    if failure is not None and not isinstance(failure, KeyboardInterrupt):
        raise failure
    if not quiet:
        print_table(summary, folder.path)
    if summary.get("interrupted"):
        print(f"interrupted at tick {engine.tick}: continue with 'python -m corporation resume {folder.path}'",
              file=sys.stderr)
    return summary


def _plot(folder: RunFolder, title: str) -> None:
    """``accuracy.png`` (test accuracy over ticks) or, for an RL run, ``return.png`` (episode returns over
    ticks); a plotting failure only warns, the run is kept."""
    try:
        from .plots import plot_run

        plot_run(folder.path, title)
    except Exception as e:  # noqa: BLE001  (matplotlib missing or broken: the run folder is still complete)
        print(f"warning: no accuracy plot or return plot ({type(e).__name__}: {e})", file=sys.stderr)


def print_table(summary: dict[str, Any], out: Path, stream: TextIO | None = None) -> None:
    """The short final table: test metrics first, then training metrics, wall time and the run folder."""
    stream = stream or sys.stdout
    final = summary["final"]
    keys = sorted(k for k in final if k.startswith("test/")) + sorted(
        k for k in final if k.startswith("train/") and (k.count("/") == 1 or k.endswith("/updates"))) + sorted(
        k for k in final if k.startswith("sg/") and k.endswith(("/cosine", "/staleness")))
    width = max([len(k) for k in keys] + [10])
    what = " (interrupted)" if summary.get("interrupted") else ""
    print(f"{summary['name']} (seed {summary['seed']}): {summary['ticks']} ticks in {summary['wall_s']:.1f} s "
          f"on {summary['device']}{what}", file=stream)
    for k in keys:
        v = final[k]
        print(f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}", file=stream)
    print(f"run folder: {out}", file=stream)


# ----- resume, evaluate, load ------------------------------------------------------------------------
def _read_checkpoint(folder: Path) -> dict[str, Any]:
    path = folder / "checkpoint.pt"
    if not path.is_file():
        raise RunFolderError(f"{path}: no checkpoint in this folder (a run writes one at its first evaluation); "
                             "give the folder of a run that reached an evaluation")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own pickle (see checkpoint.py)
    except OSError as e:
        raise os_problem(path, e, "check the file") from None
    except Exception as e:  # noqa: BLE001  (truncated or foreign file: say so in one line)
        raise RunFolderError(f"{path}: not a readable corporation checkpoint ({type(e).__name__}); "
                             "it may be truncated: resume from a copy or rerun") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != 1 or "snapshot" not in ckpt:
        raise RunFolderError(f"{path}: not a corporation checkpoint (format 1)")
    return ckpt


def _run_scenario_of(folder: Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: no such run folder; give the folder a run wrote (e.g. runs/<name>-<seed>)")
    path = folder / "scenario.yaml"
    if not path.is_file():
        raise RunFolderError(f"{path}: missing; this is not a run folder (give one a run wrote)")
    return load(path, overrides)


def load_run(folder: str | Path) -> Engine:
    """The engine of a run folder at its last checkpoint, ready to ``evaluate()``, ``compose()`` or ``run()``
    (on the device the run used)."""
    folder = Path(folder)
    scenario = _run_scenario_of(folder)
    ckpt = _read_checkpoint(folder)
    return Engine.restore(ckpt, scenario)


def resume_run(folder: str | Path, overrides: list[str] | tuple[str, ...] = (), progress: bool | None = None,
               quiet: bool = False) -> dict[str, Any]:
    """Continue the run in ``folder`` from its checkpoint, in place, to ``train.ticks`` (``--set train.ticks=N``
    raises it). What follows the checkpoint is exactly what the uninterrupted run would have logged."""
    folder = Path(folder)
    old = _run_scenario_of(folder)
    scenario = _run_scenario_of(folder, overrides)
    changed = _changed_keys(plain(old), plain(scenario))
    bad = [k for k in changed if k not in {f"train.{x}" for x in RESUMABLE_KEYS}]
    if bad:
        raise ScenarioError(f"resume can change only {', '.join('train.' + k for k in RESUMABLE_KEYS)}, not "
                            f"{bad[0]}; start a new run to change it", "--set", file=str(folder / "scenario.yaml"))
    if scenario.engine.kind == "distributed":  # its workers restore their parts and write the folder
        ckpt = _read_checkpoint(folder)
        if ckpt["tick"] >= scenario.train.ticks:
            raise RunFolderError(f"{folder}: the checkpoint is at tick {ckpt['tick']} and train.ticks is "
                                 f"{scenario.train.ticks}: nothing to do; raise it with --set train.ticks=N")
        from .launch import resume_distributed

        return resume_distributed(folder, scenario, progress, quiet)
    with open_folder(folder, create=False) as run:
        ckpt = _read_checkpoint(folder)
        if ckpt["tick"] >= scenario.train.ticks:
            raise RunFolderError(f"{folder}: the checkpoint is at tick {ckpt['tick']} and train.ticks is "
                                 f"{scenario.train.ticks}: nothing to do; raise it with --set train.ticks=N")
        before = _read_summary(folder)
        engine = Engine.restore(ckpt, scenario)
        _one_thread(engine)
        if not quiet:
            print(f"resuming {folder} at tick {engine.tick}", file=sys.stderr)
        run.write_text("scenario.yaml", dump(scenario))
        return _train(engine, run, run.metrics(keep_until=engine.tick), progress, quiet, before)


def _read_summary(folder: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _changed_keys(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _changed_keys(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [k for i, (x, y) in enumerate(zip(a, b)) for k in _changed_keys(x, y, f"{path}.{i}")]
    return [] if a == b else [path]


def evaluate_run(folder: str | Path) -> dict[str, Any]:
    """Load the run's checkpoint, score the composed system on the test split, write ``eval.json``."""
    folder = Path(folder)
    engine = load_run(folder)
    _one_thread(engine)
    result = {"tick": engine.tick, **{k: _clean(v) for k, v in engine.evaluate().items()}}
    RunFolder(folder).write_json("eval.json", result)
    return result


__all__ = ["CorporationError", "evaluate_run", "load_run", "print_table", "resume_run", "run_scenario"]
