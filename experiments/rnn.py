"""The RNN grid of the DNI paper (Jaderberg et al. 2017, table 2) at a small CPU budget.

Runs scenarios/copy.yaml, scenarios/repeat_copy.yaml and scenarios/char_lm.yaml for every window T
(2, 3, 4, 5 for copy and repeat copy; 2, 3, 4, 5, 8 for char-LM), every method (BPTT, DNI, DNI + Aux, one
``--set`` apart) and every seed, through the CLI, one single-threaded process per run (``--jobs`` at a
time). All methods of a task get the same number of ticks (time steps x batch). Finished runs (a
``summary.json`` in their folder) are reused, so the grid can be resumed. Then it writes
docs/results/rnn.md (our table beside the paper's, per-seed figures, budget) and
docs/results/rnn_curves.png (max solved length against sequences seen; named after ``--doc``).

    python experiments/rnn.py                      # the whole grid, default budget
    python experiments/rnn.py --tasks copy --seeds 0 --copy-ticks 2000 --out runs/rnn-smoke   # a smoke run
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
from corporation.compare import Group, read_run
from corporation.plots import plot_curves
from corporation.report import Cell, cached_run, ran_with, write_page

__all__ = ["ran_with", "run_one"]  # ran_with: whether a run folder was made with given --set values
METHODS = {"bptt": ["agents.lstm.state.kind=bptt"], "dni": [], "dni_aux": ["agents.lstm.state.aux=true"]}
LABEL = {"bptt": "BPTT", "dni": "DNI", "dni_aux": "DNI + Aux"}
WINDOWS = {"copy": [2, 3, 4, 5], "repeat_copy": [2, 3, 4, 5], "char_lm": [2, 3, 4, 5, 8]}
METRIC = {"copy": "test/max_solved_length", "repeat_copy": "test/max_solved_length", "char_lm": "test/bpc"}
PAPER = {  # arXiv v1, table 2: T = 2 / 3 / 4 / 5 / 8
    "copy": {"bptt": [7, 8, 10, 8, None], "dni": [16, 14, 18, 18, None], "dni_aux": [16, 17, 19, 18, None]},
    "repeat_copy": {"bptt": [7, 5, 19, 23, None], "dni": [39, 33, 39, 59, None],
                    "dni_aux": [39, 59, 67, 59, None]},
    "char_lm": {"bptt": [1.39, 1.38, 1.37, 1.37, 1.35], "dni": [1.37, 1.36, 1.35, 1.35, 1.34],
                "dni_aux": [1.37, 1.36, 1.35, 1.35, 1.33]},
}
PAPER_T = [2, 3, 4, 5, 8]
BATCH = {"copy": 32, "repeat_copy": 32, "char_lm": 128}  # task.batch_size in the scenario files
NOTES = "<!-- notes: kept when the table is regenerated -->"


def run_one(task: str, method: str, unroll: int, seed: int, ticks: int, out: Path, extra: list[str]) -> dict:
    """One run through the CLI (single-threaded) into ``out/<task>-<method>-T<unroll>-s<seed>``; returns its
    summary (reused when the folder holds a finished run of the same resolved settings: corporation.report)."""
    folder = out / f"{task}-{method}-T{unroll}-s{seed}"
    sets = [*METHODS[method], f"agents.lstm.update.unroll={unroll}", f"train.ticks={ticks}", f"seed={seed}"]
    sets += extra if method == "dni_aux" else []
    started = time.time()
    run, reused = cached_run(Cell(folder, file=ROOT / "scenarios" / f"{task}.yaml", sets=sets))
    if not reused:
        print(f"{folder.name}: {time.time() - started:.0f} s", flush=True)
    return run.summary


def fmt(v: float | None, task: str) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if task == "char_lm" else f"{v:g}"


def table(results: dict, tasks: list[str], seeds: list[int]) -> list[str]:
    """Markdown rows: per task and method, ours (mean over seeds) beside the paper's, T = 2..8."""
    lines = ["| task | method | ours T=2 / 3 / 4 / 5 / 8 | paper T=2 / 3 / 4 / 5 / 8 | ours per seed |",
             "|---|---|---|---|---|"]
    for task in tasks:
        for method in METHODS:
            ours, per_seed = [], []
            for t in PAPER_T:
                vals = [results.get((task, method, t, s)) for s in seeds]
                vals = [v for v in vals if v is not None]
                ours.append(mean(vals) if vals and t in WINDOWS[task] else None)
                if vals and t in WINDOWS[task]:
                    per_seed.append(f"T{t}: " + ", ".join(fmt(v, task) for v in vals))
            paper = " / ".join(fmt(v, task) for v in PAPER[task][method])
            lines.append(f"| {task} | {LABEL[method]} | {' / '.join(fmt(v, task) for v in ours)} | {paper} | "
                         f"{'; '.join(per_seed)} |")
    return lines


def plot(out: Path, tasks: list[str], seeds: list[int], png: Path) -> None:
    """Max solved length against sequences seen: one panel per sequence task and T, one curve per method (mean
    over seeds, band: lowest to highest seed). (Equal ticks per run: a method that reaches longer sequences
    sees fewer of them.)"""
    panels = []
    for task in [t for t in tasks if t != "char_lm"]:
        for t in WINDOWS[task]:
            groups = []
            for method in METHODS:
                folders = [out / f"{task}-{method}-T{t}-s{s}" for s in seeds]
                runs = [read_run(f) for f in folders if (f / "metrics.jsonl").is_file()]
                if runs:
                    groups.append(Group(LABEL[method], runs))
            panels.append((f"{task}, T={t}", "train/max_solved_length", groups))
    if panels:
        png.parent.mkdir(parents=True, exist_ok=True)
        plot_curves(panels, png, x="train/samples", cols=len(WINDOWS["copy"]) or 1,
                    title="every run has the same number of ticks (time steps x batch)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(WINDOWS), choices=list(WINDOWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--windows", nargs="+", type=int, help="only these T (default: the paper's per task)")
    p.add_argument("--copy-ticks", type=int, default=40000, help="ticks per copy and repeat-copy run")
    p.add_argument("--char-ticks", type=int, default=8000, help="ticks per char-LM run")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each single-threaded)")
    p.add_argument("--aux-input", choices=["h", "state"], help="state.aux_input of the DNI + Aux runs "
                   "(default: the scenario's, h)")
    p.add_argument("--aux-weight", type=float, help="state.aux_weight of the DNI + Aux runs (default: the "
                   "scenario's); finished BPTT/DNI runs in --out are reused")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "rnn")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "results" / "rnn.md")
    args = p.parse_args(argv)
    extra = [] if args.aux_weight is None else [f"agents.lstm.state.aux_weight={args.aux_weight}"]
    extra += [] if args.aux_input is None else [f"agents.lstm.state.aux_input={args.aux_input}"]
    if args.windows:
        for ts in WINDOWS.values():
            ts[:] = [t for t in ts if t in args.windows]
    grid = [(task, method, t, s) for task in args.tasks for t in WINDOWS[task] for method in METHODS
            for s in args.seeds]
    started = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        summaries = list(pool.map(lambda g: run_one(*g, args.char_ticks if g[0] == "char_lm" else args.copy_ticks,
                                                    args.out, extra), grid))
    results, wall = {}, {}
    for g, summary in zip(grid, summaries):
        results[g] = summary["final"].get(METRIC[g[0]])
        wall.setdefault(g[0], []).append(summary["wall_s"])
    rows = table(results, args.tasks, args.seeds)
    png = args.doc.with_name(f"{args.doc.stem}_curves.png")
    has_curves = any(t != "char_lm" for t in args.tasks)
    if has_curves:
        plot(args.out, args.tasks, args.seeds, png)
    budget = [f"- {task}: {args.char_ticks if task == 'char_lm' else args.copy_ticks} ticks per run "
              f"(x the batch: {BATCH[task]} sequences in lockstep), {len(wall[task])} runs, "
              f"{sum(wall[task]) / 60:.1f} run-minutes in all (sum of the single-threaded runs' wall times on a "
              "shared 2-core machine)" for task in args.tasks]
    text = "\n".join([
        "# RNN results: truncated BPTT vs DNI vs DNI + Aux", "",
        (f"Generated by `{' '.join(['python experiments/rnn.py', *(argv if argv is not None else sys.argv[1:])])}` "
         "(see docs/rnn.md for the method and the settings)."),
        f"Seeds {args.seeds}; the table gives the mean over seeds (per-seed figures in the last column).",
        "Copy / Repeat Copy: `test/max_solved_length` (largest solved N, resp. N * R) at the end of the",
        "budget; char-LM: `test/bpc` on the first `eval_chars` characters of the test part, at the best",
        "validation point. Paper: Jaderberg et al. 2017, table 2, trained far longer (and char-LM on PTB).", "",
        "Budget:", *budget, f"- wall time of the last invocation (finished runs are reused): {(time.time() - started) / 60:.1f} min",
        "",
        *rows, "", *([f"![max solved length against samples]({png.name})", ""] if has_curves else [])])
    write_page(args.doc, text, NOTES)  # keeps the hand-written reading below the marker
    print("\n".join(rows))
    print(f"wrote {args.doc}" + (f" and {png}" if has_curves else ""))


if __name__ == "__main__":
    main()
