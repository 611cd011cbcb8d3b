"""Feed-forward every-layer DNI: test error of no-backprop / backprop / DNI / cDNI at 3-6 layers (issue #2).

Reproduces the shape of the paper's MNIST FCN table (Jaderberg et al. 2017, table 1) on small budgets:
L weight layers = L-1 hidden layer-agents (256 units, linear + batch norm + ReLU) and a linear output agent,
a DNI on every agent-to-agent edge. Methods (scenario-wide interface):

  no_backprop  dni with sg.scale=0: only the top layer learns (the lower layers keep their initial weights)
  backprop     every edge ``backprop``: ordinary end-to-end training (the oracle)
  dni          unconditioned M with ``--dni-hidden`` hidden layers of ``--dni-width`` (paper: 2 x 1024)
  cdni         linear M conditioned on the one-hot label (task.y), as in the paper

Every run evaluates once, at the end of its budget (test error of the composed network on the held-out
split). Each run is an ordinary run folder under ``--runs`` (reused when it already holds a finished run of
the same settings: corporation.report), so ``python -m corporation compare|plot runs/feedforward/*`` work on
them. Results go to ``--out`` (Markdown, rewritten after every run, keeping the hand-written discussion
between the ``<!-- discussion -->`` markers) and a PNG beside it.

    python experiments/feedforward.py --datasets digits fashion_mnist --seeds 0 --jobs 2
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
from corporation.plots import plot_points
from corporation.report import Cell, cached_run, finished, mean_sd, read_run, write_page

METHODS = ("no_backprop", "backprop", "dni", "cdni")
TITLES = {"no_backprop": "no backprop", "backprop": "backprop", "dni": "DNI", "cdni": "cDNI"}
# The paper's MNIST FCN test error % (500k iterations), by method and number of layers (REFERENCE.md).
PAPER = {"no_backprop": [9.3, 12.6, 16.2, 21.4], "backprop": [2.0, 1.8, 1.8, 1.8],
         "dni": [1.9, 2.2, 3.4, 4.3], "cdni": [2.2, 1.9, 1.7, 1.6]}
PAPER_LAYERS = (3, 4, 5, 6)
DEFAULT_TICKS = {"digits": 2000, "fashion_mnist": 3000, "mnist": 3000}


def interface(method: str, dni_hidden: int, dni_width: int) -> dict[str, Any]:
    """The scenario-wide interface for ``method``."""
    if method == "backprop":
        return {"kind": "backprop"}
    if method == "no_backprop":
        return {"kind": "dni", "sg": {"hidden": 0, "scale": 0.0}, "context": None}
    if method == "dni":
        return {"kind": "dni", "sg": {"hidden": dni_hidden, "width": dni_width}, "context": None}
    return {"kind": "dni", "sg": {"hidden": 0}, "context": "task.y"}


def scenario(dataset: str, layers: int, method: str, seed: int, ticks: int, lr: float,
             dni_hidden: int, dni_width: int) -> dict[str, Any]:
    """An ff_digits-like scenario dict with ``layers`` weight layers."""
    adam = {"kind": "adam", "lr": lr}
    agents: dict[str, Any] = {f"l{i}": {"model": {"kind": "mlp", "out": 256, "batchnorm": True}, "optimizer": adam}
                              for i in range(1, layers)}
    agents[f"l{layers}"] = {"model": {"kind": "linear"}, "optimizer": adam}
    names = list(agents)
    edges = [{"src": "task.x", "dst": names[0]}, *({"src": a, "dst": b} for a, b in itertools.pairwise(names)),
             {"src": names[-1], "dst": "task.y"}]
    return {"name": f"ff_{dataset}_{layers}_{method}", "seed": seed, "device": "cpu",
            "task": {"kind": "classification", "dataset": dataset, "batch_size": 256},
            "interface": interface(method, dni_hidden, dni_width), "agents": agents, "edges": edges,
            "train": {"ticks": ticks, "eval_every": ticks, "progress": False}}


def result(run) -> dict[str, float]:
    """Test error %, final train loss and wall seconds of a finished run."""
    final = run.final
    return {"test_error": 100.0 * (1.0 - final["test/accuracy"]), "train_loss": final.get("train/loss", float("nan")),
            "wall_s": run.summary.get("wall_s", 0.0)}


def cell(values: list[float]) -> str:
    return mean_sd(values, ".1f")


def table(results: list[dict[str, Any]], dataset: str, layers: list[int]) -> list[str]:
    """One Markdown table: our test error % (mean ± sd over seeds) with the paper's MNIST FCN in brackets."""
    lines = ["| layers | " + " | ".join(TITLES[m] for m in METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
    for n in layers:
        row = []
        for m in METHODS:
            ours = [r["test_error"] for r in results if (r["dataset"], r["layers"], r["method"]) == (dataset, n, m)]
            paper = f" ({PAPER[m][PAPER_LAYERS.index(n)]})" if n in PAPER_LAYERS else ""
            row.append(cell(ours) + paper)
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    return lines


def plot(results: list[dict[str, Any]], datasets: list[str], layers: list[int], path: Path) -> None:
    """Test error vs depth: the paper's MNIST FCN, then ours per dataset (mean over seeds, min-max bars)."""
    panels = [("paper: MNIST FCN, 500k iterations",
               {TITLES[m]: {n: [PAPER[m][i]] for i, n in enumerate(PAPER_LAYERS)} for m in METHODS})]
    for ds in datasets:
        series = {TITLES[m]: {n: [r["test_error"] for r in results if (r["dataset"], r["layers"], r["method"]) ==
                                  (ds, n, m)] for n in layers} for m in METHODS}
        panels.append((f"ours: {ds}, {results[0]['budget'][ds]} ticks" if results else ds, series))
    plot_points(panels, path, "layers", "test error %", logy=True)


def write_md(path: Path, results: list[dict[str, Any]], args: argparse.Namespace, command: str) -> None:
    """(Re)write the results page, keeping the hand-written discussion block of an existing page."""
    wall = sum(r["wall_s"] for r in results)
    lines = ["# Feed-forward DNI and cDNI: test error vs depth", "",
             ("Generated by `experiments/feedforward.py` (the tables are rewritten on every run; the discussion "
             "is hand-written)."), "", "```", command, "```", "",
             (f"- Budget: {', '.join(f'{d} {t} ticks' for d, t in args.budget.items())}; one tick = one "
             f"mini-batch of 256 for every agent; Adam lr {args.lr:g}, no decay; one evaluation at the end."),
             (f"- Model: L weight layers = L-1 hidden layer-agents (256, batch norm, ReLU) + a linear output "
             f"agent, a DNI on every agent-to-agent edge. DNI: unconditioned M with {args.dni_hidden} hidden "
             f"layers of {args.dni_width}; cDNI: linear M conditioned on the one-hot label; no backprop: "
             "sg.scale=0 (only the top layer learns)."),
             "- Seeds: " + "; ".join(f"{ds} {', '.join(map(str, sorted({r['seed'] for r in results if r['dataset'] == ds})))}"
                                     for ds in args.datasets) + " (cells: mean ± sd over seeds when more than one).",
             (f"- Runs: {len(results)} (run folders in `{args.runs.relative_to(ROOT) if args.runs.is_relative_to(ROOT) else args.runs}`); "
             f"total wall {wall / 60:.1f} min (one thread per run, device cpu, on a shared 2-core machine)."),
             "", ("Test error % of the composed network; in brackets the paper's MNIST FCN after 500k iterations "
             "(a different, harder-to-reach target: see the discussion)."), ""]
    for ds in args.datasets:
        lines += [f"## {ds} ({args.budget[ds]} ticks)", "", *table(results, ds, args.layers), ""]
    if results:
        plot(results, args.datasets, args.layers, path.with_suffix(".png"))
        lines += [f"![test error vs depth]({path.with_suffix('.png').name})", ""]
    lines += ["## Discussion", ""]
    write_page(path, "\n".join(lines), "<!-- discussion -->", "<!-- /discussion -->")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "fashion_mnist"])
    ap.add_argument("--layers", nargs="+", type=int, default=[3, 4, 5, 6])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--ticks", nargs="+", default=[], metavar="[DATASET=]N",
                    help="budget: N for every dataset, or DATASET=N (defaults: digits 2000, fashion_mnist 3000)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dni-hidden", type=int, default=2)
    ap.add_argument("--dni-width", type=int, default=256)
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each single-threaded)")
    ap.add_argument("--cached-only", action="store_true", help="no new runs: rebuild the page from --runs")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/feedforward.md")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs/feedforward",
                    help="run folders, one per cell; a finished run of the same settings is reused")
    args = ap.parse_args(argv)
    args.budget = {d: DEFAULT_TICKS.get(d, 3000) for d in args.datasets}
    for item in args.ticks:
        ds, _, n = item.rpartition("=")
        for d in ([ds] if ds else args.datasets):
            args.budget[d] = int(n)
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--cached-only"]
    command = "python experiments/feedforward.py " + " ".join(given)
    grid = [(ds, n, m, s) for s in args.seeds for ds in args.datasets for n in args.layers for m in args.methods]
    print(f"{len(grid)} runs, budget {args.budget}", flush=True)
    from concurrent.futures import ThreadPoolExecutor

    def one(g: tuple[str, int, str, int]):
        ds, n, m, s = g
        dni = f"-dni{args.dni_hidden}x{args.dni_width}" if m == "dni" else ""
        c = Cell(args.runs / f"{ds}-L{n}-{m}{dni}-lr{args.lr:g}-t{args.budget[ds]}-s{s}",
                 raw=scenario(ds, n, m, s, args.budget[ds], args.lr, args.dni_hidden, args.dni_width))
        if args.cached_only:
            return (read_run(c.folder), True) if finished(c.folder) else (None, True)
        return cached_run(c)

    results = []
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for i, (g, (run, reused)) in enumerate(zip(grid, pool.map(one, grid)), 1):
            if run is None:
                continue
            ds, n, m, s = g
            r = {"dataset": ds, "layers": n, "method": m, "seed": s, **result(run), "budget": args.budget}
            results.append(r)
            print(f"[{i}/{len(grid)}] {ds} L={n} {m:<11} seed {s}: test error {r['test_error']:5.2f}%  "
                  f"train loss {r['train_loss']:.3f}  ({r['wall_s']:.0f} s wall{', reused' if reused else ''})",
                  flush=True)
            write_md(args.out, results, args, command)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
