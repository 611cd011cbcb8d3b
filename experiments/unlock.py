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
Each run is a run folder under ``--runs`` (default runs/unlock/), reused when the script is run again and the
folder holds a finished run of the same settings (corporation.report), so an interrupted grid resumes; the
folders work with ``python -m corporation plot|compare``.

    OMP_NUM_THREADS=1 python experiments/unlock.py              # the full grid (about 15-20 min, one core)
    OMP_NUM_THREADS=1 python experiments/unlock.py --quick      # a smoke test of the whole pipeline
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from statistics import mean
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corporation import load
from corporation.plots import plot_points
from corporation.report import Cell, cached_runs, write_page

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


def result(run) -> dict[str, Any]:
    """Final test metrics, optimizer steps per layer (mean over the layers) and wall time of a finished run."""
    out = {k: v for k, v in run.final.items() if k.startswith("test/")}
    out["updates"] = mean(run.final[f"train/{a}/updates"] for a in AGENTS)
    out["wall_s"] = run.summary.get("wall_s", 0.0)
    return out


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


def folder_of(cell: dict[str, Any], runs: Path) -> Path:
    """A cell's run folder: one per (mode, dataset, context, p, seed, ticks)."""
    return runs / f"{cell['mode']}-{cell['dataset']}-{cell['context']}-p{cell['p']:g}-t{cell['ticks']}-s{cell['seed']}"


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
    """Test error against p_update per dataset: one curve per (M, training), mean with the seeds' range; the
    backprop oracle (p = 1) as a reference line."""
    panels, references = [], []
    for dataset in args.datasets:
        series = {f"{c_label}, {m_label}": {p: error_pct(select(rows, dataset=dataset, mode=m, context=c, p=p))
                                            for p in args.p}
                  for m, (_, m_label) in MODES.items() for c, c_label in CONTEXTS.items()}
        panels.append((f"{DATASETS[dataset]}, {args.ticks[dataset]} ticks", series))
        bp = error_pct(select(rows, dataset=dataset, mode="backprop"))
        references.append({"backprop (p = 1)": mean(bp)} if bp else {})
    plot_points(panels, path, "p_update", "test error (%)", logx=True, references=references)


def report(rows: list[dict[str, Any]], args: argparse.Namespace, wall: float, md: Path, png: Path) -> str:
    """The results page: settings, one table per dataset, the paper's readings, the corporation check."""
    lines = [
        "# Stochastic updates and complete unlock (p_update study)",
        "",
        ("Generated by `python experiments/unlock.py`"
         + (" (**--quick smoke run: not results**)" if args.quick else "")
         + f"; {len(rows)} runs, one thread each, {wall / 60:.1f} min of wall time in all on a shared machine"
         " (run folders: `python -m corporation compare|plot` read them)."),
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
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "unlock", help="run folders (the cache)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each single-threaded)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.p = args.seeds[:1], [0.2, 1.0]
        args.ticks_digits, args.ticks_fashion = 40, 20
        args.runs = args.runs / "quick"
        args.out = args.runs
    args.ticks = {"digits": args.ticks_digits, "fashion_mnist": args.ticks_fashion}
    args.out.mkdir(parents=True, exist_ok=True)
    todo = list(cells(args))
    runs = cached_runs([Cell(folder_of(c, args.runs), file=ROOT / c["path"], sets=c["sets"]) for c in todo],
                       jobs=args.jobs)
    rows = [{**{k: v for k, v in c.items() if k not in ("path", "sets")}, **result(r)} for c, r in zip(todo, runs)]
    wall = sum(r["wall_s"] for r in rows)
    png = args.out / "unlock.png"
    plot([r for r in rows if r["mode"] in ("backprop", *MODES)], args, png)
    md = args.out / "unlock.md"
    write_page(md, report(rows, args, wall, md, png), NOTES[0], NOTES[1])  # keeps the hand-written reading
    print(f"wrote {md} and {png} ({wall / 60:.1f} min wall of runs)")


if __name__ == "__main__":
    main()
