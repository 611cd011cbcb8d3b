"""Decoupled agents in parallel: the distributed engine (2 worker processes, gloo) against one process.

All figures come from one run on one machine; each configuration is measured --reps times, alternating
(a shared machine's slow spells then hit every configuration alike), and the median rate is reported; every configuration runs the same ticks after the same
warm-up, each worker with one intra-op thread unless said otherwise. Ticks per second are measured on
worker 0 between the end of the warm-up and the end of the run (lockstep: worker 0 cannot finish before the
others), so process start-up is excluded.

  (a) pipeline   two LSTM agents (hidden --hidden, batch --batch, unroll 4, --features inputs) in a chain, DNI on the edge
                 between them with latency 4 (= unroll, so both stages update at the same ticks, and each
                 worker may run 3 ticks ahead): local engine (1 thread) / 2 workers; and locked backprop
                 (latency 0) in one process
  (b) wide_mlp   a wide MLP split in two agents the same way: local (1 thread), local with 2 intra-op
                 threads, 2 workers (1 thread each)
  (c) hier_rnn   scenarios/hier_rnn.yaml with A -> B at latency 1: wall seconds to reach 90% of the locked
                 baseline's final test B accuracy (--hier-ticks ticks; --skip-hier to leave it out)

    python benchmarks/parallel.py [--ticks 400] [--warmup 50] [--hidden 512] [--batch 32] [--skip-hier]
                                  [--hier-ticks 4000] [--only-hier] [--features 256] [--reps 3]

Last line: ``pipeline_workers2/local: X`` (the issue's target: >= 1.7 on 2 cores).
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (registers the bench_random task)

from corporation import Engine, from_dict, load
from corporation.launch import launch

ROOT = Path(__file__).resolve().parents[1]
LATENCY = 4  # of the DNI edge between the stages: = unroll, so both stages update at the same ticks


def pipeline(kind: str, hidden: int, batch: int, model: str = "lstm", features: int = 256) -> dict[str, Any]:
    """Two agents in a chain (task.x -> a -> b -> task.y); ``kind`` dni (latency LATENCY) or backprop (0);
    ``features``: the task's input size (256: the two stages then cost about the same, measured by
    ``time/worker*/busy``: b's larger input is offset by a's M)."""
    first = ({"kind": "lstm", "hidden": hidden, "readout": False} if model == "lstm"
             else {"kind": "mlp", "out": hidden, "hidden": [hidden]})
    last = ({"kind": "lstm", "hidden": hidden} if model == "lstm"  # a readout to the 10 classes
            else {"kind": "mlp", "hidden": [hidden], "out_activation": False})
    unroll = {"unroll": 4} if model == "lstm" else {"unroll": 1}
    return {"name": f"parallel_{model}_{kind}", "seed": 0, "device": "cpu",
            "task": {"kind": "bench_random", "batch_size": batch, "features": features, "classes": 10},
            "interface": {"kind": kind, "sg": {"hidden": 0}, "context": None},
            "agents": {"a": {"model": first, "update": unroll}, "b": {"model": last, "update": unroll}},
            "edges": [{"src": "task.x", "dst": "a"}, {"src": "a", "dst": "b", "latency": LATENCY if kind == "dni" else 0},
                      {"src": "b", "dst": "task.y"}],
            "train": {"ticks": 10**6, "eval_every": 10**6, "progress": False}}


def local_rate(raw: dict[str, Any], ticks: int, warmup: int, threads: int = 1) -> float:
    """Ticks per second of the local engine."""
    torch.set_num_threads(threads)
    engine = Engine(from_dict(raw))
    for _ in range(warmup):
        engine.step()
    started = time.perf_counter()
    for _ in range(ticks):
        engine.step()
    return ticks / (time.perf_counter() - started)


def _timed(engine: Any, ticks: int, warmup: int, path: str) -> None:
    for _ in range(warmup):
        engine.step()
    started = time.perf_counter()
    for _ in range(ticks):
        engine.step()
    Path(path).write_text(json.dumps({"rate": ticks / (time.perf_counter() - started)}))


def _drive(engine: Any, ticks: int, warmup: int) -> None:
    for _ in range(warmup + ticks):
        engine.step()


def distributed_rate(raw: dict[str, Any], ticks: int, warmup: int) -> float:
    """Ticks per second of 2 workers (worker 0 times; the others step as many ticks)."""
    raw = {**raw, "engine": {"kind": "distributed", "workers": 2}}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rate.json"
        launch(from_dict(raw), 2, functools.partial(_timed, ticks=ticks, warmup=warmup, path=str(out)),
               follow=functools.partial(_drive, ticks=ticks, warmup=warmup))
        return json.loads(out.read_text())["rate"]


def _hier_lead(engine: Any, path: str) -> None:
    curve = []
    started = time.perf_counter()
    engine.run(on_log=lambda r: curve.append((time.perf_counter() - started, r.get("test/B/accuracy"))))
    Path(path).write_text(json.dumps(curve))


def hier(ticks: int) -> dict[str, float]:
    """Wall seconds to 90% of the locked baseline's final test B accuracy (A -> B at latency 1)."""
    common_set = ["device=cpu", f"train.ticks={ticks}", f"train.eval_every={max(ticks // 10, 1)}",
                  "train.progress=false", "edges.1.latency=1"]
    torch.set_num_threads(1)
    curves: dict[str, list] = {}
    for name, extra in (("locked", ["interface.kind=backprop", "edges.1.latency=0"]), ("dni_local", [])):
        sc = load(ROOT / "scenarios" / "hier_rnn.yaml", [*common_set, *extra])
        started, curve = time.perf_counter(), []
        Engine(sc).run(on_log=lambda r, c=curve, s=started: c.append((time.perf_counter() - s,
                                                                      r.get("test/B/accuracy"))))
        curves[name] = curve
    sc = load(ROOT / "scenarios" / "hier_rnn.yaml", [*common_set, "engine.kind=distributed", "engine.workers=2",
                                                     "engine.placement={A: 0, B: 1}"])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "curve.json"
        launch(sc, 2, functools.partial(_hier_lead, path=str(out)))
        curves["dni_workers2"] = json.loads(out.read_text())
    goal = 0.9 * curves["locked"][-1][1]
    out = {"goal": goal}
    for name, curve in curves.items():
        hit = next((s for s, acc in curve if acc is not None and acc >= goal), float("nan"))
        out[f"{name}_seconds"] = hit
        out[f"{name}_final"] = curve[-1][1]
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ticks", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--wide", type=int, default=1024, help="width of the wide MLP of (b)")
    ap.add_argument("--features", type=int, default=256, help="the pipeline's input size")
    ap.add_argument("--reps", type=int, default=3, help="alternating repetitions; the median rate is reported")
    ap.add_argument("--hier-ticks", type=int, default=4000)
    ap.add_argument("--skip-hier", action="store_true")
    ap.add_argument("--only-hier", action="store_true", help="just (c)")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}; {args.ticks} ticks after {args.warmup} warm-up; batch {args.batch}")
    r: dict[str, float] = {}

    def note(key: str, rate: float) -> None:
        r[key] = rate
        print(f"{key:>22}: {rate:8.2f} ticks/s", flush=True)

    if args.only_hier:
        h = hier(args.hier_ticks)
        print(json.dumps(h))
        return h
    dni = pipeline("dni", args.hidden, args.batch, features=args.features)
    locked = pipeline("backprop", args.hidden, args.batch, features=args.features)
    wide = pipeline("dni", args.wide, args.batch * 4, model="mlp")
    runs = {"pipeline_local": lambda: local_rate(dni, args.ticks, args.warmup),
            "pipeline_locked": lambda: local_rate(locked, args.ticks, args.warmup),
            "pipeline_workers2": lambda: distributed_rate(dni, args.ticks, args.warmup),
            "wide_local": lambda: local_rate(wide, args.ticks // 4, args.warmup // 4),
            "wide_local_2threads": lambda: local_rate(wide, args.ticks // 4, args.warmup // 4, threads=2),
            "wide_workers2": lambda: distributed_rate(wide, args.ticks // 4, args.warmup // 4)}
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for rep in range(args.reps):  # alternating, so a slow spell of a shared machine hits every configuration
        for key, measure in runs.items():
            rates[key].append(measure())
        print(f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rates.items()), flush=True)
    for key, values in rates.items():
        note(key, statistics.median(values))
    if not args.skip_hier:
        h = hier(args.hier_ticks)
        print(f"hier_rnn: goal test/B/accuracy {h['goal']:.3f} (90% of locked's final)")
        for name in ("locked", "dni_local", "dni_workers2"):
            print(f"  {name:>13}: {h[f'{name}_seconds']:7.1f} s to the goal, final {h[f'{name}_final']:.3f}")
    ratios = {"pipeline_workers2/locked": r["pipeline_workers2"] / r["pipeline_locked"],
              "wide_workers2/local": r["wide_workers2"] / r["wide_local"],
              "wide_workers2/local_2threads": r["wide_workers2"] / r["wide_local_2threads"],
              "pipeline_workers2/local": r["pipeline_workers2"] / r["pipeline_local"]}
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    return ratios


if __name__ == "__main__":
    main()
