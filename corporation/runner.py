"""Running a scenario to a run folder: the IO edge (files, progress bar, final table).

A run writes ``DIR/scenario.yaml`` (resolved) first, then appends ``metrics.jsonl`` line by line (flushed,
so an interrupted run keeps what it logged), then ``summary.json`` and ``accuracy.png`` (test accuracy over
ticks; a plotting failure only warns). CPU runs use one intra-op thread unless OMP_NUM_THREADS is set
(agents are small: more threads only add synchronisation, badly so on shared cores). Ctrl-C stops the run
early but still writes the summary (marked ``"interrupted": true``).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch

from .engine import Engine
from .scenario import dump
from .spec import Scenario


def default_out(scenario: Scenario) -> Path:
    return Path("runs") / f"{scenario.name}-{scenario.seed}"


class Progress:
    """A one-line progress bar on a terminal (tqdm); silent when stderr is not a terminal."""

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None):
        self.bar = None
        stream = stream or sys.stderr
        if enabled and stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="tick", file=stream, dynamic_ncols=True, leave=False)

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


def run_scenario(scenario: Scenario, out: Path | None = None, device: str | None = None,
                 progress: bool | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train ``scenario`` and write its run folder; returns the summary."""
    out = Path(out) if out is not None else default_out(scenario)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scenario.yaml").write_text(dump(scenario), encoding="utf-8")
    engine = Engine(scenario, device=device)
    if engine.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)  # small agents: one intra-op thread is fastest, and robust on shared cores
    final: dict[str, Any] = {}
    shown: dict[str, Any] = {}
    bar = Progress(scenario.train.ticks, scenario.train.progress if progress is None else progress)
    started = time.perf_counter()
    interrupted = False
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as metrics:
        def on_log(record: dict[str, Any]) -> None:
            record = {k: _clean(v) for k, v in record.items()}
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            final.update(record)
            shown.update({k: v for k, v in record.items() if k.startswith("test/") and k.endswith("accuracy")})

        failure: BaseException | None = None
        try:
            engine.run(on_log=on_log, on_tick=lambda t: bar.update(t, shown))
        except KeyboardInterrupt as e:
            interrupted, failure = True, e
        except Exception as e:  # noqa: BLE001  (keep what was written, record why it stopped, then re-raise)
            failure = e
        finally:
            bar.close()
    summary = {"name": scenario.name, "seed": scenario.seed, "ticks": engine.tick,
               "wall_s": round(time.perf_counter() - started, 3), "device": str(engine.device),
               "final": {k: v for k, v in final.items() if k != "tick"}}
    if interrupted:
        summary["interrupted"] = True
    elif failure is not None:
        summary["error"] = f"{type(failure).__name__}: {failure}"
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    _plot(out, f"{scenario.name} (seed {scenario.seed})")
    if failure is not None:
        raise failure
    if not quiet:
        print_table(summary, out)
    return summary


def _plot(out: Path, title: str) -> None:
    """``out/accuracy.png`` (test accuracy over ticks); a plotting failure only warns, the run is kept."""
    try:
        from .plots import plot_run

        plot_run(out, title)
    except Exception as e:  # noqa: BLE001  (matplotlib missing or broken: the run folder is still complete)
        print(f"warning: no accuracy plot ({type(e).__name__}: {e})", file=sys.stderr)


def print_table(summary: dict[str, Any], out: Path, stream: TextIO | None = None) -> None:
    """The short final table: test metrics first, then training metrics, wall time and the run folder."""
    stream = stream or sys.stdout
    final = summary["final"]
    keys = sorted(k for k in final if k.startswith("test/")) + sorted(
        k for k in final if k.startswith("train/") and (k.count("/") == 1 or k.endswith("/updates"))) + sorted(
        k for k in final if k.startswith("sg/") and k.endswith(("/cosine", "/staleness")))
    width = max([len(k) for k in keys] + [10])
    print(f"{summary['name']} (seed {summary['seed']}): {summary['ticks']} ticks in {summary['wall_s']:.1f} s "
          f"on {summary['device']}", file=stream)
    for k in keys:
        v = final[k]
        print(f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}", file=stream)
    print(f"run folder: {out}", file=stream)
