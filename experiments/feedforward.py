"""Feed-forward every-layer DNI: test error of no-backprop / backprop / DNI / cDNI at 3-6 layers (issue #2).

Reproduces the shape of the paper's MNIST FCN table (Jaderberg et al. 2017, table 1) on small budgets:
L weight layers = L-1 hidden layer-agents (256 units, linear + batch norm + ReLU) and a linear output agent,
a DNI on every agent-to-agent edge. Methods (scenario-wide interface):

  no_backprop  dni with sg.scale=0: only the top layer learns (the lower layers keep their initial weights)
  backprop     every edge ``backprop``: ordinary end-to-end training (the oracle)
  dni          unconditioned M with ``--dni-hidden`` hidden layers of ``--dni-width`` (paper: 2 x 1024)
  cdni         linear M conditioned on the one-hot label (task.y), as in the paper

Every run evaluates once, at the end of its budget (test error of the composed network on the held-out
split). Results go to ``--out`` (Markdown, rewritten after every run, keeping the hand-written discussion
between the ``<!-- discussion -->`` markers), a PNG beside it, and raw JSON (``--json``).

    OMP_NUM_THREADS=1 python experiments/feedforward.py --datasets digits fashion_mnist --seeds 0
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
from corporation import Engine, from_dict

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


def run_one(raw: dict[str, Any]) -> dict[str, float]:
    """Train one scenario; returns test error %, final train loss, wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    last = Engine(from_dict(raw)).run()
    return {"test_error": 100.0 * (1.0 - last["test/accuracy"]), "train_loss": last.get("train/loss", float("nan")),
            "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


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
    """Test error vs depth: the paper's MNIST FCN, then ours per dataset (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, axes = plt.subplots(1, 1 + len(datasets), figsize=(4.2 * (1 + len(datasets)), 3.4))
    style = {m: (mk, 0.06 * (i - 1.5)) for i, (m, mk) in enumerate(zip(METHODS, "osD^"))}  # marker, x offset
    for m in METHODS:
        axes[0].plot([n + style[m][1] for n in PAPER_LAYERS], PAPER[m], marker=style[m][0], label=TITLES[m])
    axes[0].set_title("paper: MNIST FCN, 500k iterations")
    for ax, ds in zip(axes[1:], datasets):
        for m in METHODS:
            pts = [(n + style[m][1], statistics.mean(v)) for n in layers
                   if (v := [r["test_error"] for r in results if (r["dataset"], r["layers"], r["method"]) == (ds, n, m)])]
            if pts:
                ax.plot(*zip(*pts), marker=style[m][0], label=TITLES[m])
        ax.set_title(f"ours: {ds}, {results[0]['budget'][ds]} ticks" if results else ds)
    for ax in axes:
        ax.set_xlabel("layers")
        ax.set_ylabel("test error %")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xticks(sorted(set(layers) | set(PAPER_LAYERS)))
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_md(path: Path, results: list[dict[str, Any]], args: argparse.Namespace, command: str) -> None:
    """(Re)write the results page, keeping the hand-written discussion block of an existing page."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    found = re.search(r"<!-- discussion -->.*?<!-- /discussion -->", old, re.DOTALL)
    discussion = found.group(0) if found else "<!-- discussion -->\n(to be written)\n<!-- /discussion -->"
    wall = sum(r["wall_s"] for r in results)
    cpu = sum(r["cpu_s"] for r in results)
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
             (f"- Runs: {len(results)}; total wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min "
             f"(torch threads {torch.get_num_threads()}, device cpu, on a shared 2-core machine)."),
             "", ("Test error % of the composed network; in brackets the paper's MNIST FCN after 500k iterations "
             "(a different, harder-to-reach target: see the discussion)."), ""]
    for ds in args.datasets:
        lines += [f"## {ds} ({args.budget[ds]} ticks)", "", *table(results, ds, args.layers), ""]
    if results:
        plot(results, args.datasets, args.layers, path.with_suffix(".png"))
        lines += [f"![test error vs depth]({path.with_suffix('.png').name})", ""]
    lines += ["## Discussion", "", discussion, ""]
    path.write_text("\n".join(lines), encoding="utf-8")


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
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cached-only", action="store_true", help="no new runs: rebuild the page from --json")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/feedforward.md")
    ap.add_argument("--json", type=Path, default=ROOT / "runs/feedforward/results.json",
                    help="raw results; existing entries for the same run are reused (resume)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.budget = {d: DEFAULT_TICKS.get(d, 3000) for d in args.datasets}
    for item in args.ticks:
        ds, _, n = item.rpartition("=")
        for d in ([ds] if ds else args.datasets):
            args.budget[d] = int(n)
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--cached-only"]
    command = "OMP_NUM_THREADS=1 python experiments/feedforward.py " + " ".join(given)
    done: list[dict[str, Any]] = json.loads(args.json.read_text()) if args.json.exists() else []
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid = [(ds, n, m, s) for s in args.seeds for ds in args.datasets for n in args.layers for m in args.methods]
    results = []
    print(f"{len(grid)} runs, torch threads {torch.get_num_threads()}, budget {args.budget}", flush=True)
    for i, (ds, n, m, s) in enumerate(grid, 1):
        key = {"dataset": ds, "layers": n, "method": m, "seed": s, "ticks": args.budget[ds], "lr": args.lr,
               "dni": [args.dni_hidden, args.dni_width] if m == "dni" else None}
        prev = next((r for r in done if all(r.get(k) == v for k, v in key.items())), None)
        if prev is None and args.cached_only:
            continue
        r = prev or {**key, **run_one(scenario(ds, n, m, s, args.budget[ds], args.lr, args.dni_hidden,
                                               args.dni_width))}
        r["budget"] = args.budget
        results.append(r)
        if prev is None:
            done.append(r)
            args.json.write_text(json.dumps(done, indent=1))
        print(f"[{i}/{len(grid)}] {ds} L={n} {m:<11} seed {s}: test error {r['test_error']:5.2f}%  "
              f"train loss {r['train_loss']:.3f}  ({r['wall_s']:.0f} s wall{', cached' if prev else ''})", flush=True)
        write_md(args.out, results, args, command)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
