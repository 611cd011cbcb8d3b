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
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

import yaml

ROOT = Path(__file__).resolve().parents[1]
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


def ran_with(folder: Path, sets: list[str]) -> bool:
    """Whether the run in ``folder`` (its resolved scenario.yaml) has every ``key=value`` of ``sets``."""
    path = folder / "scenario.yaml"
    if not path.is_file():
        return False
    resolved = yaml.safe_load(path.read_text(encoding="utf-8"))
    for item in sets:
        key, value = item.split("=", 1)
        node = resolved
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        if node != yaml.safe_load(value):
            return False
    return True


def run_one(task: str, method: str, unroll: int, seed: int, ticks: int, out: Path, extra: list[str]) -> dict:
    """One run through the CLI (single-threaded); returns its summary (reused if already there with the same
    budget and ``--set`` values; a finished run of another budget or setting is run again)."""
    folder = out / f"{task}-{method}-T{unroll}-s{seed}"
    summary = folder / "summary.json"
    sets = [*METHODS[method], f"agents.lstm.update.unroll={unroll}", f"train.ticks={ticks}"]
    sets += extra if method == "dni_aux" else []
    if not summary.is_file() or not ran_with(folder, sets):
        cmd = [sys.executable, "-m", "corporation", "run", str(ROOT / "scenarios" / f"{task}.yaml"), "--quiet",
               "--seed", str(seed), "--out", str(folder), "--overwrite", *[a for s in sets for a in ("--set", s)]]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        started = time.time()
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"{folder.name} failed: {r.stderr.strip()}")
        print(f"{folder.name}: {time.time() - started:.0f} s", flush=True)
    return json.loads(summary.read_text())


def curve(folder: Path, key: str) -> tuple[list[float], list[float]]:
    """(samples seen, metric) from a run's metrics.jsonl."""
    xs, ys = [], []
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if key in rec and "train/samples" in rec:
            xs.append(rec["train/samples"])
            ys.append(rec[key])
    return xs, ys


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
    """Max solved length against sequences seen, one line per seed, one panel per sequence task and T.
    (Equal ticks per run: a method that reaches longer sequences sees fewer of them.)"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seq_tasks = [t for t in tasks if t != "char_lm"]
    if not seq_tasks:
        return
    ts = WINDOWS["copy"]
    fig, axes = plt.subplots(len(seq_tasks), len(ts), figsize=(3.2 * len(ts), 2.8 * len(seq_tasks)),
                             squeeze=False)
    colors = {"bptt": "tab:blue", "dni": "tab:orange", "dni_aux": "tab:green"}
    for i, task in enumerate(seq_tasks):
        for j, t in enumerate(ts):
            ax = axes[i][j]
            for method, style in zip(METHODS, ("-", "--", ":")):
                for k, s in enumerate(seeds):
                    folder = out / f"{task}-{method}-T{t}-s{s}"
                    if not (folder / "metrics.jsonl").is_file():
                        continue
                    xs, ys = curve(folder, "train/max_solved_length")
                    ax.step([x / 1000 for x in xs], ys, style, where="post", color=colors[method], alpha=0.85,
                            label=LABEL[method] if k == 0 else None)
            ax.set_title(f"{task}, T={t}", fontsize=9)
            ax.set_xlabel("sequences seen (thousands)", fontsize=8)
            ax.set_ylabel("max solved length", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.suptitle("one line per seed; every run has the same number of ticks (time steps x batch)", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


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
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    if args.doc.is_file() and NOTES in args.doc.read_text(encoding="utf-8"):  # keep the hand-written reading
        text += args.doc.read_text(encoding="utf-8").split(NOTES, 1)[1].join([NOTES, ""])
    args.doc.write_text(text, encoding="utf-8")
    print("\n".join(rows))
    print(f"wrote {args.doc}" + (f" and {png}" if has_curves else ""))


if __name__ == "__main__":
    main()
