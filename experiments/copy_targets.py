"""Copy, Repeat Copy and char-LM with the recurrent state M's target options (issue 14): does a target that
reaches back to the true loss (``nstep``, ``lambda``) or a discount (``gamma``) let DNI solve longer sequences?

Runs scenarios/copy.yaml (or repeat_copy.yaml, char_lm.yaml) through the CLI, one single-threaded process at a time, for
each variant, window T and seed, into ``--out/<task>-<variant>-T<T>-s<seed>`` (finished runs are reused:
corporation.report), then prints a Markdown table: the final ``test/max_solved_length`` (char_lm:
``test/bpc``; mean and per seed) and the state M's r2 / cosine against its own target (the last logged values).

    python experiments/copy_targets.py --windows 2 --seeds 0 --ticks 50000           # a screen
    python experiments/copy_targets.py --windows 2 3 --seeds 0 1 --ticks 200000 --variants bptt dni nstep_4
    python experiments/copy_targets.py --task char_lm --windows 8 --ticks 30000 --variants dni nstep_4
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
from corporation.report import Cell, cached_runs

SG = "agents.lstm.state.sg"
# the score of each task (char_lm: bits per character on the test text at the best validation point, lower is
# better, as experiments/rnn.py)
METRIC = {"copy": "test/max_solved_length", "repeat_copy": "test/max_solved_length", "char_lm": "test/bpc"}
VARIANTS = {
    "bptt": ["agents.lstm.state.kind=bptt"],
    "dni": [f"{SG}.target=bootstrap"],  # the one-step bootstrapped target (gamma 1): the scenarios' default before nstep
    "gamma_0.5": [f"{SG}.gamma=0.5"],
    "nstep_2": [f"{SG}.target=nstep", f"{SG}.horizon=2"],
    "nstep_4": [f"{SG}.target=nstep", f"{SG}.horizon=4"],
    "lambda_0.5": [f"{SG}.target=lambda", f"{SG}.lam=0.5", f"{SG}.horizon=4"],
    # DNI + Aux with the raw target (the first version; copy.yaml now normalises it)
    "nstep_4_aux": [f"{SG}.target=nstep", f"{SG}.horizon=4", "agents.lstm.state.aux=true",
                    "agents.lstm.state.aux_normalize=false"],
    "nstep_4_aux_w0.01": [f"{SG}.target=nstep", f"{SG}.horizon=4", "agents.lstm.state.aux=true",
                          "agents.lstm.state.aux_weight=0.01"],
    "nstep_4_aux_norm": [f"{SG}.target=nstep", f"{SG}.horizon=4", "agents.lstm.state.aux=true",
                         "agents.lstm.state.aux_normalize=true"],  # Aux target in units of its RMS
    "nstep_4_aux_norm_w1": [f"{SG}.target=nstep", f"{SG}.horizon=4", "agents.lstm.state.aux=true",
                            "agents.lstm.state.aux_normalize=true", "agents.lstm.state.aux_weight=1.0"],
    "exact_4": [f"{SG}.target=exact", f"{SG}.horizon=4"],  # a diagnosis: M on the true gradient (4 windows)
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=list(METRIC), default="copy")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--windows", nargs="+", type=int, default=[2, 3])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--ticks", type=int, default=200000)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "copy_targets")
    args = p.parse_args(argv)
    cells, keys = [], []
    for v in args.variants:
        for t in args.windows:
            for s in args.seeds:
                sets = [*VARIANTS[v], f"agents.lstm.update.unroll={t}", f"train.ticks={args.ticks}", f"seed={s}"]
                if args.task != "char_lm":  # char_lm keeps its scenario's eval_every (rnn_char_long.md's)
                    sets.append(f"train.eval_every={max(args.ticks // 10, 1)}")
                cells.append(Cell(args.out / f"{args.task}-{v}-T{t}-s{s}",
                                  file=ROOT / "scenarios" / f"{args.task}.yaml", sets=sets))
                keys.append((v, t, s))
    runs = dict(zip(keys, cached_runs(cells, jobs=args.jobs)))
    print(f"\n{args.task}, {args.ticks} ticks per run, seeds {args.seeds}: {METRIC[args.task]}; state M r2 / cosine")
    print("| variant | " + " | ".join(f"T={t} length (per seed) | T={t} M r2 / cos" for t in args.windows) + " |")
    print("|---|" + "---|---|" * len(args.windows))
    for v in args.variants:
        cells_out = []
        for t in args.windows:
            finals = [runs[(v, t, s)].final for s in args.seeds]
            lengths = [f.get(METRIC[args.task], float("nan")) for f in finals]
            r2 = [f.get("sg/lstm-state/r2") for f in finals if f.get("sg/lstm-state/r2") is not None]
            cos = [f.get("sg/lstm-state/cosine") for f in finals if f.get("sg/lstm-state/cosine") is not None]
            cells_out.append(f"{mean(lengths):.4g} ({', '.join(f'{x:.4g}' for x in lengths)})")
            cells_out.append(f"{mean(r2):.2f} / {mean(cos):.2f}" if r2 and cos else "–")
        print(f"| {v} | " + " | ".join(cells_out) + " |")


if __name__ == "__main__":
    main()
