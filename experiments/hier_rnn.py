"""The two-timescale hierarchical system: DNI vs the locked baseline at T = 2, 4, 8 (docs/results/hier_rnn.md).

Every run trains scenarios/hier_rnn.yaml with the clocks set for T, evaluates every ``eval_every`` ticks, and
times the training alone (evaluation excluded, which a run folder does not record). Runs go to ``--runs`` as
JSON through corporation.report.json_cached (a finished run is reused, so the grid resumes); then the per-tick cost of each mode is measured interleaved (both modes under the same
background load) and the summary table and plot are written. Single-threaded runs, ``--jobs`` at a time.

    python experiments/hier_rnn.py                    # the full grid + ablations (about 1 h on 2 shared cores)
    python experiments/hier_rnn.py --T 4 --seeds 0    # a quick look

Modes: ``dni`` (the scenario's default: cDNI on A -> B, A updates every T ticks), ``locked``
(interface.kind=backprop: A and B are one locked component, updated every T² ticks), and T=4 ablations:
``dni_nocontext`` (M without B's label), ``dni_unrollT2`` (DNI, but A updates only every T² ticks).
``VARIANTS``: issue 14's DNI variants (``--modes NAME``; docs/results/hier_rnn_sg.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import mean
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
from corporation.compare import Group, Run
from corporation.plots import plot_curves
from corporation.report import json_cached

SCENARIO = ROOT / "scenarios" / "hier_rnn.yaml"
TICKS = {2: 30000, 4: 50000, 8: 200000}
EVAL_EVERY = {2: 250, 4: 2500, 8: 10000}
MODES = {"dni": [], "locked": ["interface.kind=backprop"]}
ABLATIONS = {"dni_nocontext": ["interface.context=null"],
             "dni_unrollT2": lambda T: [f"agents.A.update.unroll={T * T}"]}
# issue 14: DNI variants (docs/results/hier_rnn_sg.md); run them with --modes NAME ... (applied after the clock
# overrides, at any T). Rounds 1-4 were measured before the file's M read A's past messages (sg.history) and
# gated A's message head (sg.sender_step r2); they keep that older base (normalize off, as it then was), so each
# reproduces its table; "dni_normalize" is the file of sections 2-6 (its default then).
OLD_BASE = ["interface.sg.normalize=false", "interface.sg.history=0", "interface.sg.sender_step=optimizer",
            "agents.A.optimizer.weight_decay=0"]
OLD_VARIANTS = {
    "dni_plain": [],
    "dni_normalize": ["interface.sg.normalize=true"],
    "dni_clip_error": ["interface.sg.clip_error=0.02"],
    "dni_clip": ["interface.sg.clip=0.05"],
    "dni_scale0.2": ["interface.sg.scale=0.2"],
    "dni_m_lr1e-3": ["interface.sg.optimizer={kind: adam, lr: 1.0e-3}"],
    "dni_m_sgd": ["interface.sg.optimizer={kind: sgd, lr: 0.1}"],
    "dni_warmup": ["interface.sg.warmup=5000"],
    "dni_wd": ["agents.A.optimizer.weight_decay=1.0e-4"],
    "dni_wd1e-3": ["agents.A.optimizer.weight_decay=1.0e-3"],
    "dni_m_mlp": ["interface.sg.hidden=2", "interface.sg.width=256", "interface.sg.batchnorm=true"],
    "dni_prob": ["agents.A.update.prob=0.5"],
    # round 2: combinations of the screen's best (normalize, A's weight decay)
    "dni_norm_wd": ["interface.sg.normalize=true", "agents.A.optimizer.weight_decay=1.0e-4"],
    "dni_norm_wd_mlr": ["interface.sg.normalize=true", "agents.A.optimizer.weight_decay=1.0e-4",
                        "interface.sg.optimizer={kind: adam, lr: 1.0e-3}"],
    "dni_norm_wd_unroll2T": lambda T: ["interface.sg.normalize=true", "agents.A.optimizer.weight_decay=1.0e-4",
                                       f"agents.A.update.unroll={2 * T}"],
    "dni_norm_unrollT2": lambda T: ["interface.sg.normalize=true", f"agents.A.update.unroll={T * T}"],
    "dni_norm_wd_unrollT2": lambda T: ["interface.sg.normalize=true", "agents.A.optimizer.weight_decay=1.0e-4",
                                       f"agents.A.update.unroll={T * T}"],
    # round 3: A's head toward B (trained only by g_hat) steps with lr x clamp(M's running r2, 0, 1)
    "dni_r2": ["interface.sg.normalize=true", "interface.sg.sender_step=r2"],
    "dni_r2_wd": ["interface.sg.normalize=true", "interface.sg.sender_step=r2",
                  "agents.A.optimizer.weight_decay=1.0e-4"],
    # round 4: A every T ticks at lr / T: per B update A moves about as far as with unroll T² (one step at lr)
    "dni_norm_wd_lr_over_T": lambda T: ["interface.sg.normalize=true", "agents.A.optimizer.weight_decay=1.0e-4",
                                        f"agents.A.optimizer.lr={3.0e-3 / T}"],
}
# round 5: history T - 1 and the r2 gate, measured before the file also gave A weight decay 1e-4 (so without it);
# the file now is "dni" / "locked"
NO_WD = ["agents.A.optimizer.weight_decay=0"]
NEW_VARIANTS = {
    "dni_nowd": NO_WD,  # history + r2 gate + normalize
    "locked_nowd": ["interface.kind=backprop", *NO_WD],
    "dni_hist_only": [*NO_WD, "interface.sg.sender_step=optimizer"],  # history without the r2 gate
    "dni_r2_only": [*NO_WD, "interface.sg.history=0"],  # the gate without history (= round 3's dni_r2)
    "dni_hist2T": lambda T: [*NO_WD, f"interface.sg.history={2 * T - 1}"],  # a longer history than B's window
    "dni_nocontext_nowd": [*NO_WD, "interface.context=null"],
    "dni_unrollT2_nowd": lambda T: [*NO_WD, f"agents.A.update.unroll={T * T}"],
    "dni_hist_only_wd": ["interface.sg.sender_step=optimizer"],  # the file without the gate
}


def _old(extra: Any) -> Any:
    if callable(extra):
        return lambda T: OLD_BASE + extra(T)
    return OLD_BASE + extra


VARIANTS = {**{name: _old(v) for name, v in OLD_VARIANTS.items()}, **NEW_VARIANTS}
FINAL_EVALS = 3  # "final" accuracy = mean of the last 3 evaluations (one evaluation is noisy)
A_LEVEL = 0.9  # "A learned": the tick of the first evaluation with test/A/accuracy >= 0.9


def clock_overrides(T: int) -> list[str]:
    """The --set flags that make scenarios/hier_rnn.yaml a system with window T."""
    return [f"task.T={T}", f"agents.A.update.unroll={T}", f"agents.B.clock.period={T}",
            f"agents.B.clock.phase={T - 1}", f"agents.B.update.unroll={T}", f"interface.sg.history={T - 1}"]


def mode_overrides(mode: str, T: int) -> list[str]:
    extra = MODES[mode] if mode in MODES else ABLATIONS[mode] if mode in ABLATIONS else VARIANTS[mode]
    return list(extra(T) if callable(extra) else extra)


def train_one(T: int, mode: str, seed: int, ticks: int, eval_every: int) -> dict[str, Any]:
    """One run: the eval curve with cumulative training wall seconds (evaluation excluded)."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from corporation import Engine, load

    overrides = clock_overrides(T) + mode_overrides(mode, T) + [f"seed={seed}", "device=cpu"]
    from corporation.guard import Diverged

    engine = Engine(load(SCENARIO, overrides))
    curve, train_s = [], 0.0
    while engine.tick < ticks:
        start = time.perf_counter()
        try:
            for _ in range(eval_every):
                engine.step()
        except Diverged as e:  # keep the curve so far (a Diverged does not cross a process pool's pickling)
            return {"T": T, "mode": mode, "seed": seed, "ticks": ticks, "overrides": overrides, "curve": curve,
                    "diverged": str(e)}
        train_s += time.perf_counter() - start
        record = {"tick": engine.tick, "train_s": round(train_s, 3), **engine.collect(), **engine.evaluate()}
        curve.append({k: v for k, v in record.items() if isinstance(v, (int, float))})
    return {"T": T, "mode": mode, "seed": seed, "ticks": ticks, "overrides": overrides, "curve": curve,
            "probe": message_probe(engine)}


def message_probe(engine: Any) -> dict[str, float]:
    """What A's messages tell about what B needs, read by linear probes on the fixed test streams (fitted on
    the first half of the streams, scored on the second): ``probe/3s_in_T``, the number of 3s in a message's
    own T ticks from that message; ``probe/B_target``, B's target (3s in T² ticks) from the last T messages,
    i.e. the accuracy of the best linear reader of A's messages (B is an LSTM reading them one by one)."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    task, a = engine.task, engine.agents["A"]
    T = task.T
    idx, labels = task.test_streams()  # (streams, ticks)
    a.reset_eval_state()
    msgs, threes = [], []
    with torch.no_grad():
        for t in range(idx.shape[1]):
            out = a.forward_eval(task._input(task.x_test[idx[:, t]], t))
            if (t + 1) % T == 0:
                msgs.append(a.project("B", out).cpu().numpy())
                threes.append((labels[:, t + 1 - T:t + 1] == 3).sum(1).cpu().numpy())
    m, y = np.stack(msgs, 1), np.stack(threes, 1)  # (streams, windows, n), (streams, windows)
    half = m.shape[0] // 2

    def score(x: np.ndarray, target: np.ndarray) -> float:
        fit = LogisticRegression(max_iter=3000).fit(x[:half].reshape(-1, x.shape[-1]), target[:half].reshape(-1))
        return float(fit.score(x[half:].reshape(-1, x.shape[-1]), target[half:].reshape(-1)))

    windows = np.stack([m[:, k + 1 - T:k + 1].reshape(m.shape[0], -1) for k in range(T - 1, m.shape[1])], 1)
    b = np.stack([y[:, k + 1 - T:k + 1].sum(1) for k in range(T - 1, m.shape[1])], 1)
    return {"probe/3s_in_T": score(m, y), "probe/B_target": score(windows, b)}


def timing(T: int, rounds: int = 8, chunk: int = 400) -> dict[str, dict[str, float]]:
    """Per-tick cost of each mode, measured interleaved (dni, locked, dni, ...) in one process so both see
    the same background load: median CPU and wall milliseconds per tick over ``rounds`` chunks."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from corporation import Engine, load

    engines = {m: Engine(load(SCENARIO, clock_overrides(T) + MODES[m] + ["device=cpu"])) for m in MODES}
    for e in engines.values():
        for _ in range(2 * T * T):  # warm-up: first windows, allocator
            e.step()
    samples: dict[str, dict[str, list[float]]] = {m: {"cpu": [], "wall": []} for m in MODES}
    for _ in range(rounds):
        for m, e in engines.items():
            c, w = time.process_time(), time.perf_counter()
            for _ in range(chunk):
                e.step()
            samples[m]["cpu"].append(1000 * (time.process_time() - c) / chunk)
            samples[m]["wall"].append(1000 * (time.perf_counter() - w) / chunk)
    return {m: {k: sorted(v)[len(v) // 2] for k, v in d.items()} for m, d in samples.items()}


def run_path(runs: Path, T: int, mode: str, seed: int) -> Path:
    return runs / f"T{T}-{mode}-s{seed}.json"


def _job(args: tuple) -> str:
    runs, T, mode, seed, ticks, every = args
    result = json_cached(run_path(Path(runs), T, mode, seed), lambda: train_one(T, mode, seed, ticks, every))
    if "diverged" in result:
        return f"T={T} {mode:<13} seed {seed}: {result['diverged']}"
    last = result["curve"][-1]
    return (f"T={T} {mode:<13} seed {seed}: A {last['test/A/accuracy']:.3f} B {last['test/B/accuracy']:.3f} "
            f"({last['train_s']:.0f} s)")


# ----- summary -------------------------------------------------------------------------------------------
def final(curve: list[dict], key: str) -> float:
    return mean(r[key] for r in curve[-FINAL_EVALS:])


def first_reach(curve: list[dict], key: str, level: float) -> tuple[int | None, float | None]:
    """(tick, training seconds) of the first evaluation with ``key`` >= ``level``."""
    for r in curve:
        if r[key] >= level:
            return r["tick"], r["train_s"]
    return None, None


def summarize(results: list[dict], costs: dict[int, dict] | None = None) -> tuple[list[dict], dict]:
    """Per (T, mode): mean over seeds of the final accuracies, A's updates, and the ticks to reach 90% of
    the locked baseline's final B accuracy (mean over the seeds that reach it), times the mode's CPU cost
    per tick (``costs[T][mode]``, measured interleaved; ablations use the dni cost)."""
    rows, by = [], {}
    for r in results:
        by.setdefault((r["T"], r["mode"]), []).append(r)
    target = {T: 0.9 * mean(final(r["curve"], "test/B/accuracy") for r in rs)
              for (T, mode), rs in by.items() if mode == "locked"}
    order = [*MODES, *ABLATIONS, *VARIANTS]
    for (T, mode), rs in sorted(by.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))):
        reach = [first_reach(r["curve"], "test/B/accuracy", target[T]) for r in rs] if T in target else []
        hit = [x for x in reach if x[0] is not None]
        rows.append({
            "T": T, "mode": mode, "seeds": len(rs), "ticks": rs[0]["ticks"],
            "A": mean(final(r["curve"], "test/A/accuracy") for r in rs),
            "B": mean(final(r["curve"], "test/B/accuracy") for r in rs),
            "B_seeds": [round(final(r["curve"], "test/B/accuracy"), 3) for r in rs],
            "B_mae": mean(final(r["curve"], "test/B/mae") for r in rs),
            "A_major": rs[0]["curve"][-1]["test/A/majority"], "B_major": rs[0]["curve"][-1]["test/B/majority"],
            "A_updates": mean(r["curve"][-1]["train/A/updates"] for r in rs),
            "cosine": mean(final(r["curve"], "sg/A-B/cosine") for r in rs) if "sg/A-B/cosine" in rs[0]["curve"][-1]
            else None,
            "r2": mean(final(r["curve"], "sg/A-B/r2") for r in rs) if "sg/A-B/r2" in rs[0]["curve"][-1] else None,
            "A_seeds": [round(final(r["curve"], "test/A/accuracy"), 3) for r in rs],
            "probe": ({k: mean(r["probe"][k] for r in rs) for k in rs[0]["probe"]}
                      if all("probe" in r for r in rs) else None),
            "reached": f"{len(hit)}/{len(rs)}", "target": target.get(T),
            "reach_ticks": mean(h[0] for h in hit) if hit else None,
            "reach_s": mean(h[1] for h in hit) if hit else None,
            "train_s": mean(r["curve"][-1]["train_s"] for r in rs),
        })
        a_hit = [t for t, _ in (first_reach(r["curve"], "test/A/accuracy", A_LEVEL) for r in rs) if t is not None]
        rows[-1]["a_reach"] = (mean(a_hit), len(a_hit)) if a_hit else (None, 0)
        cost = (costs or {}).get(T, {}).get(mode if mode in MODES else "dni")
        rows[-1]["cpu_ms"] = cost["cpu"] if cost else None
        rows[-1]["reach_cpu_s"] = (rows[-1]["reach_ticks"] * cost["cpu"] / 1000
                                   if cost and rows[-1]["reach_ticks"] is not None else None)
    return rows, by


def table(rows: list[dict]) -> str:
    head = ("| T | mode | seeds | ticks | A acc (per seed) | A >= 0.9 at tick | B acc (per seed) | B mae | A updates | M r2 | M cosine | "
            "probe: 3s in T / B target | "
            "90% of locked B | reached | ticks to reach | CPU ms/tick | CPU s to reach | wall s to reach | "
            "wall s total |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def f(v: Any, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    for r in rows:
        seeds = ", ".join(f"{b:.3f}" for b in r["B_seeds"])
        a_tick, a_n = r["a_reach"]
        a_reach = "never" if a_tick is None else f"{a_tick:.0f}" + (f" ({a_n}/{r['seeds']})" if a_n < r["seeds"] else "")
        a_seeds = ", ".join(f"{a:.3f}" for a in r["A_seeds"])
        probe = "–" if r["probe"] is None else f"{r['probe']['probe/3s_in_T']:.3f} / {r['probe']['probe/B_target']:.3f}"
        lines.append(f"| {r['T']} | {r['mode']} | {r['seeds']} | {r['ticks']} | {r['A']:.3f} ({a_seeds}) | {a_reach} | "
                     f"{r['B']:.3f} ({seeds}) | {r['B_mae']:.2f} | {r['A_updates']:.0f} | {f(r['r2'], '.2f')} | "
                     f"{f(r['cosine'], '.2f')} | {probe} | "
                     f"{f(r['target'], '.3f')} | {r['reached']} | {f(r['reach_ticks'], '.0f')} | "
                     f"{f(r['cpu_ms'], '.2f')} | {f(r['reach_cpu_s'], '.1f')} | {f(r['reach_s'], '.1f')} | "
                     f"{r['train_s']:.1f} |")
    return "\n".join(lines)


def plot(by: dict, out: Path) -> None:
    """Test accuracy of B (top row) and A (bottom row) against ticks, one panel per T, one curve per mode
    (mean over seeds, band: lowest to highest seed), B's majority-class baseline dotted."""
    Ts = sorted({T for T, _ in by})
    groups = {T: [Group(mode, [Run(Path(f"T{T}-{mode}-s{r['seed']}"), {}, r["curve"]) for r in rs])
                  for (t, mode), rs in sorted(by.items()) if t == T] for T in Ts}
    panels = [(f"T = {T}: B", "test/B/accuracy", groups[T],
               {"B majority class": next(iter(by[k] for k in by if k[0] == T))[0]["curve"][-1]["test/B/majority"]})
              for T in Ts]
    panels += [(f"T = {T}: A", "test/A/accuracy", groups[T], {}) for T in Ts]
    plot_curves(panels, out, ylim=(0, 1), cols=len(Ts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--T", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--modes", nargs="+", default=["dni", "locked"])
    p.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the T=4 ablations (dni_nocontext, dni_unrollT2)")
    p.add_argument("--ticks", type=int, help="ticks per run (default: 30k / 50k / 200k for T = 2 / 4 / 8)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--summary-only", action="store_true",
                   help="train nothing and measure no timing: summarise the runs of the grid already under --runs")
    p.add_argument("--runs", default=str(ROOT / "runs" / "hier_rnn_grid"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    runs, out = Path(args.runs), Path(args.out)
    runs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    grid = [(T, m, s) for T in args.T for m in args.modes for s in args.seeds]
    if args.ablations and 4 in args.T:
        grid += [(4, m, s) for m in ABLATIONS for s in args.seeds]
    jobs = [(str(runs), T, m, s, args.ticks or TICKS.get(T, 50000), EVAL_EVERY.get(T, 2500))
            for T, m, s in grid if not run_path(runs, T, m, s).exists()]
    if args.summary_only:
        grid = [(T, m, s) for T, m, s in grid if run_path(runs, T, m, s).exists()]
        jobs = []
    print(f"{len(grid)} runs, {len(grid) - len(jobs)} already done; {len(jobs)} to go, {args.jobs} at a time",
          flush=True)
    if jobs:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for line in pool.map(_job, jobs):
                print(line, flush=True)
    results = [json.loads(run_path(runs, T, m, s).read_text()) for T, m, s in grid]
    for r in [r for r in results if "diverged" in r]:
        print(f"T={r['T']} {r['mode']} seed {r['seed']}: {r['diverged']} (left out of the table)", flush=True)
    results = [r for r in results if "diverged" not in r and r["curve"]]
    costs = {}
    if set(MODES) <= set(args.modes):
        for T in args.T:
            cached = runs / f"timing-T{T}.json"
            if args.summary_only and not cached.exists():
                continue  # --summary-only measures nothing: a timing not taken yet stays out of the table
            costs[T] = json_cached(cached, lambda T=T: timing(T))
            print(f"T={T} per-tick cost (interleaved, median): " + ", ".join(
                f"{m} {c['cpu']:.2f} ms CPU / {c['wall']:.2f} ms wall" for m, c in costs[T].items()), flush=True)
    rows, by = summarize(results, costs)
    text = table(rows)
    (out / "hier_rnn_table.md").write_text(text + "\n", encoding="utf-8")
    plot(by, out / "hier_rnn.png")
    print(text)
    print(f"wrote {out / 'hier_rnn_table.md'} and {out / 'hier_rnn.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
