"""Stochastic updates and complete unlock: test error against p_update (Jaderberg et al. 2017, section 3.3).

Grid: p_update in {0.05, 0.1, 0.2, 0.5, 1.0} (every layer applies each due update with that probability)
x {update-decoupled (scenarios/async_updates.yaml: DNI on every edge, synchronous forward),
   forward+update-decoupled (scenarios/corporation.yaml: DNI + a synthetic input I(x) on every edge,
   latency 1, so every layer always works on I's prediction)}
x {DNI (M without context), cDNI (M conditioned on the one-hot label)} x seeds x {digits, Fashion-MNIST},
plus the backprop oracle (same FCN, one locked component) per dataset and seed. Every run has the same tick
budget, so a run with p_update = p makes about p * ticks optimizer steps per layer.

Then the "corporation" check: scenarios/corporation.yaml as shipped (its default budget) against its backprop
oracle, for the seeds given.

Writes docs/results/unlock.md (tables, the paper's readings beside ours) and docs/results/unlock.png.
Each finished run is appended to a cache (default runs/unlock/results.jsonl) and skipped when the script
is run again with the same settings, so an interrupted grid resumes.

    OMP_NUM_THREADS=1 python experiments/unlock.py              # the full grid (about 15-20 min, one core)
    OMP_NUM_THREADS=1 python experiments/unlock.py --quick      # a smoke test of the whole pipeline
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from statistics import mean
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from corporation import Engine, load
from corporation.tasks import datasets

P_UPDATE = [0.05, 0.1, 0.2, 0.5, 1.0]
MODES = {  # mode -> (scenario file, label)
    "update": ("scenarios/async_updates.yaml", "update-decoupled"),
    "unlock": ("scenarios/corporation.yaml", "forward+update-decoupled"),
}
CONTEXTS = {"dni": "DNI", "cdni": "cDNI"}
DATASETS = {"digits": "digits (sklearn 8x8)", "fashion_mnist": "Fashion-MNIST"}
AGENTS = ("l1", "l2", "l3")
# The backprop oracle of both files: one locked component, no synthetic input, no latency.
BACKPROP = ["interface.kind=backprop", "interface.synthetic_input=null", "edges.1.latency=0", "edges.2.latency=0"]
# The paper's readings (MNIST FCN, 500k iterations, read off the stochastic-update figure; REFERENCE.md).
PAPER = {
    ("update", "cdni"): "about 2.0-2.5 % for most p; converges even at p = 0.05",
    ("update", "dni"): "about 2.0-2.5 % for most p; about 3-4 % at very small p",
    ("unlock", "cdni"): "about 2.0-2.5 % for most p; converges even at p = 0.05",
    ("unlock", "dni"): "about 2.0-2.5 % for most p; about 3-4 % at very small p",
    ("backprop", "-"): "about 2 % (3-layer MNIST FCN table: 2.0 %)",
}


NOTES = ("<!-- notes: kept when this page is regenerated -->", "<!-- /notes -->")


def overrides(dataset: str, mode: str, context: str, p: float, seed: int, ticks: int) -> list[str]:
    """The --set list that turns a shipped scenario file into one grid cell."""
    sets = [f"task.dataset={dataset}", f"seed={seed}", "device=cpu", f"train.ticks={ticks}",
            f"train.eval_every={ticks}", "train.progress=false"]
    sets += [f"agents.{a}.update.prob={p}" for a in AGENTS]
    if mode == "backprop":
        sets += BACKPROP
    elif context == "dni":
        sets.append("interface.context=null")
    return sets


def run_one(path: str, sets: list[str]) -> dict[str, Any]:
    """Train one scenario; final test metrics, optimizer steps per layer and wall time (with setup)."""
    started, cpu = time.perf_counter(), time.process_time()
    scenario = load(ROOT / path, sets)
    engine = Engine(scenario, device="cpu")
    record = engine.run()
    out = {k: v for k, v in record.items() if k.startswith("test/")}
    out["updates"] = mean(engine.agents[a].counts["updates"] for a in AGENTS)
    out["wall_s"] = round(time.perf_counter() - started, 2)
    out["cpu_s"] = round(time.process_time() - cpu, 2)  # the honest cost on a shared machine
    return out


def load_cache(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["key"]: r for r in rows}


def cells(args: argparse.Namespace) -> Iterable[dict[str, Any]]:
    """Every run of the study, as (key, scenario file, overrides, labels)."""
    for seed in args.seeds:  # scenarios/corporation.yaml as shipped (its default budget) and its oracle
        base = [f"seed={seed}", "device=cpu", "train.progress=false"]
        for mode, sets in (("corporation", base), ("corporation_backprop", base + BACKPROP)):
            if args.quick:
                sets = sets + ["train.ticks=40", "train.eval_every=40"]
            yield {"dataset": "digits", "mode": mode, "context": "cdni", "p": 1.0, "seed": seed,
                   "ticks": load(ROOT / MODES["unlock"][0], sets).train.ticks, "path": MODES["unlock"][0],
                   "sets": sets}
    for dataset in args.datasets:
        ticks = args.ticks[dataset]
        for seed in args.seeds:
            yield {"dataset": dataset, "mode": "backprop", "context": "-", "p": 1.0, "seed": seed,
                   "ticks": ticks, "path": MODES["update"][0],
                   "sets": overrides(dataset, "backprop", "-", 1.0, seed, ticks)}
        for mode, (path, _) in MODES.items():
            for context in CONTEXTS:
                for p in args.p:
                    for seed in args.seeds:
                        yield {"dataset": dataset, "mode": mode, "context": context, "p": p, "seed": seed,
                               "ticks": ticks, "path": path,
                               "sets": overrides(dataset, mode, context, p, seed, ticks)}


def key_of(cell: dict[str, Any]) -> str:
    """A run's cache key: the scenario file (and its content, so an edited file reruns) and the overrides."""
    digest = hashlib.sha1((ROOT / cell["path"]).read_bytes()).hexdigest()[:12]
    return json.dumps([cell["path"], digest, cell["sets"]])


def error_pct(rows: list[dict[str, Any]], metric: str = "test/accuracy") -> list[float]:
    return [100.0 * (1.0 - r[metric]) for r in rows]


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    each = " / ".join(f"{v:.1f}" for v in values)
    return f"**{mean(values):.1f}** ({each})" if len(values) > 1 else f"**{values[0]:.1f}**"


def select(rows: list[dict[str, Any]], **want: Any) -> list[dict[str, Any]]:
    return sorted((r for r in rows if all(r[k] == v for k, v in want.items())), key=lambda r: r["seed"])


def plot(rows: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.datasets), figsize=(5.2 * len(args.datasets), 4.0), squeeze=False)
    colors = {"dni": "tab:orange", "cdni": "tab:blue"}
    styles = {"update": ("-", "o"), "unlock": ("--", "s")}
    for ax, dataset in zip(axes[0], args.datasets):
        for mode, (_, mode_label) in MODES.items():
            for context, context_label in CONTEXTS.items():
                xs, ys, lo, hi = [], [], [], []
                for p in args.p:
                    errs = error_pct(select(rows, dataset=dataset, mode=mode, context=context, p=p))
                    if errs:
                        xs.append(p)
                        ys.append(mean(errs))
                        lo.append(mean(errs) - min(errs))
                        hi.append(max(errs) - mean(errs))
                line, marker = styles[mode]
                ax.errorbar(xs, ys, yerr=[lo, hi], color=colors[context], linestyle=line, marker=marker,
                            capsize=3, label=f"{context_label}, {mode_label}")
        bp = error_pct(select(rows, dataset=dataset, mode="backprop"))
        if bp:
            ax.axhline(mean(bp), color="gray", linestyle=":", label="backprop (p = 1)")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(args.p)
        ax.set_xticklabels([str(p) for p in args.p])
        ax.set_xlabel("p_update")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"{DATASETS[dataset]}, {args.ticks[dataset]} ticks")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(rows: list[dict[str, Any]], args: argparse.Namespace, wall: float, cpu: float, md: Path,
           png: Path) -> str:
    """The results page: settings, one table per dataset, the paper's readings, the corporation check."""
    lines = [
        "# Stochastic updates and complete unlock (p_update study)",
        "",
        ("Generated by `OMP_NUM_THREADS=1 python experiments/unlock.py`"
         + (" (**--quick smoke run: not results**)" if args.quick else "")
         + f"; {len(rows)} runs, {cpu / 60:.1f} min of CPU time on one thread"
         f" (`OMP_NUM_THREADS=1`, `torch.set_num_threads(1)`; {wall / 60:.1f} min of wall time on a shared"
         " machine)."),
        "",
        ("**Setup.** The 3-layer FCN of the paper on each dataset: layer-agents `l1`, `l2` of 256 units with "
         "batch norm + ReLU, a linear `l3`, Adam lr 1e-3, batch 256, a DNI on both agent-to-agent edges "
         "(linear M; cDNI conditions it on the one-hot label, DNI has no context). "
         "*update-decoupled* = `scenarios/async_updates.yaml` (synchronous forward); "
         "*forward+update-decoupled* = `scenarios/corporation.yaml` (plus a synthetic input I(x), an MLP with "
         "one hidden layer of 256, on each edge with latency 1: every layer always trains on I's prediction "
         "of its input, never waiting for its sender). Every layer applies each due update with probability "
         "p_update (`agents.*.update.prob`). Test error of the agents composed as one network on real messages, "
         f"after a fixed budget of ticks per run ({', '.join(f'{DATASETS[d]}: {args.ticks[d]}' for d in args.datasets)}"
         f"), seeds {', '.join(map(str, args.seeds))}. A cell is **mean** (seed by seed), in %. "
         "The budget is fixed in ticks, so a layer makes about p_update x ticks optimizer steps (listed under "
         "each table), whereas the paper trained every p for 500k iterations."),
        "",
    ]
    header = "| training | M | " + " | ".join(f"p = {p}" for p in args.p) + " | paper (MNIST FCN, 500k it.) |"
    for dataset in args.datasets:
        lines += [f"## {DATASETS[dataset]} ({args.ticks[dataset]} ticks)", "", header,
                  "|" + "---|" * (len(args.p) + 3)]
        bp = error_pct(select(rows, dataset=dataset, mode="backprop"))
        lines.append("| backprop (oracle) | - | " + " | ".join(fmt(bp) if p == 1.0 else "" for p in args.p)
                     + f" | {PAPER[('backprop', '-')]} |")
        for mode, (_, mode_label) in MODES.items():
            for context, context_label in CONTEXTS.items():
                cells_ = [fmt(error_pct(select(rows, dataset=dataset, mode=mode, context=context, p=p)))
                          for p in args.p]
                lines.append(f"| {mode_label} | {context_label} | " + " | ".join(cells_)
                             + f" | {PAPER[(mode, context)]} |")
        updates = {p: mean(r["updates"] for r in select(rows, dataset=dataset, mode="update", p=p) or
                           [{"updates": 0}]) for p in args.p}
        lines += ["", "Optimizer steps per layer: " + ", ".join(f"p = {p}: {updates[p]:.0f}" for p in args.p)
                  + ".", ""]
        syn = {p: error_pct(select(rows, dataset=dataset, mode="unlock", context="cdni", p=p),
                            "test/synthetic_accuracy") for p in args.p}
        lines += ["Forward+update-decoupled cDNI, each layer reading its synthetic input only "
                  "(`test/synthetic_accuracy`, how well the parts agree), test error %: "
                  + ", ".join(f"p = {p}: {fmt(syn[p])}" for p in args.p) + ".", ""]
    lines += [f"![test error against p_update]({png.name})", ""]
    if 0.2 in args.p:
        lines += ["**p_update = 0.2** (each layer applies one update in five), test accuracy %, mean over seeds:", ""]
        for dataset in args.datasets:
            bp = select(rows, dataset=dataset, mode="backprop")
            parts = [f"{CONTEXTS[c]} {MODES[m][1]} {mean(100 * r['test/accuracy'] for r in sel):.1f}"
                     for m in MODES for c in CONTEXTS
                     if (sel := select(rows, dataset=dataset, mode=m, context=c, p=0.2))]
            if bp:
                parts.append(f"backprop (p = 1) {mean(100 * r['test/accuracy'] for r in bp):.1f}")
            lines.append(f"- {DATASETS[dataset]}: " + "; ".join(parts) + ".")
        lines.append("")
    corp = select(rows, mode="corporation")
    oracle = select(rows, mode="corporation_backprop")
    if corp and oracle:
        acc = [100 * r["test/accuracy"] for r in corp]
        syn = [100 * r["test/synthetic_accuracy"] for r in corp]
        bp = [100 * r["test/accuracy"] for r in oracle]
        gap = mean(bp) - mean(acc)
        lines += [
            "## The corporation: fully unlocked cDNI on digits, default budget",
            "",
            (f"`python -m corporation run scenarios/corporation.yaml` as shipped ({corp[0]['ticks']} ticks), "
             "against the same network trained by backprop (`--set interface.kind=backprop "
             "--set interface.synthetic_input=null --set edges.1.latency=0 --set edges.2.latency=0`). "
             "Test accuracy %:"),
            "",
            "| seed | corporation (real messages) | parts on synthetic inputs only | backprop |",
            "|---|---|---|---|",
        ]
        for a, s, b, r in zip(acc, syn, bp, corp):
            lines.append(f"| {r['seed']} | {a:.1f} | {s:.1f} | {b:.1f} |")
        lines += [f"| mean | **{mean(acc):.1f}** | {mean(syn):.1f} | **{mean(bp):.1f}** |", "",
                  f"Gap to backprop: {gap:.1f} points "
                  + ("(within the 3-point target)." if gap <= 3.0 else "(**outside** the 3-point target)."), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--p", nargs="+", type=float, default=P_UPDATE)
    ap.add_argument("--ticks-digits", type=int, default=1500)
    ap.add_argument("--ticks-fashion", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="tiny budget, one seed: checks the pipeline only")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "unlock" / "results.jsonl")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.p = args.seeds[:1], [0.2, 1.0]
        args.ticks_digits, args.ticks_fashion = 40, 20
        args.cache = args.cache.with_name("quick.jsonl")
        args.out = args.cache.parent / "quick"
    args.ticks = {"digits": args.ticks_digits, "fashion_mnist": args.ticks_fashion}
    torch.set_num_threads(1)
    datasets.load = functools.lru_cache(maxsize=None)(datasets.load)  # read each dataset once (read-only)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = load_cache(args.cache)
    todo = list(cells(args))
    rows: list[dict[str, Any]] = []
    for i, cell in enumerate(todo):
        key = key_of(cell)
        if key not in cache:
            result = run_one(cell["path"], cell["sets"])
            cache[key] = {"key": key, **{k: v for k, v in cell.items() if k not in ("path", "sets")}, **result}
            with open(args.cache, "a", encoding="utf-8") as f:
                f.write(json.dumps(cache[key]) + "\n")
            print(f"[{i + 1}/{len(todo)}] {cell['dataset']} {cell['mode']} {cell['context']} p={cell['p']} "
                  f"seed={cell['seed']}: test acc {result['test/accuracy']:.4f} ({result['cpu_s']:.1f} s CPU, "
                  f"{result['wall_s']:.1f} s wall)",
                  flush=True)
        rows.append(cache[key])
    wall = sum(r["wall_s"] for r in rows)
    cpu = sum(r.get("cpu_s", r["wall_s"]) for r in rows)
    png = args.out / "unlock.png"
    plot([r for r in rows if r["mode"] in ("backprop", *MODES)], args, png)
    md = args.out / "unlock.md"
    text = report(rows, args, wall, cpu, md, png) + "\n"
    old = md.read_text(encoding="utf-8") if md.is_file() else ""
    if NOTES[0] in old and NOTES[1] in old:  # keep the hand-written reading of the results
        text += "\n" + old[old.index(NOTES[0]): old.index(NOTES[1]) + len(NOTES[1])] + "\n"
    md.write_text(text, encoding="utf-8")
    print(f"wrote {md} and {png} ({cpu / 60:.1f} min CPU, {wall / 60:.1f} min wall of runs)")


if __name__ == "__main__":
    main()
