"""Command line: ``python -m corporation run|resume|evaluate|validate|show|plot|compare``.

Exit codes (README "Exit codes"): 0 done, 2 user error (one line on stderr, no traceback), 3 diverged (one line
naming where, what and the tick), 130 interrupted (the run folder keeps its metrics, summary and checkpoint).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import plugins
from . import scenario as scenario_mod
from .errors import CorporationError, one_line
from .guard import Diverged
from .runfolder import RunFolderError


class UsageError(CorporationError):
    """Bad command-line arguments (argparse's complaint, as one line)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see 'python -m {self.prog.split()[0]} --help')")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="corporation", description="Train systems of neural networks that "
                                "learn together through Decoupled Neural Interfaces.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train a scenario and write its run folder")
    run.add_argument("file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override any scenario key, e.g. --set interface.kind=backprop (repeatable)")
    run.add_argument("--out", help="run folder (default: the first free runs/<name>-<seed>[-k]/)")
    run.add_argument("--overwrite", action="store_true", help="replace the run an --out folder already holds")
    run.add_argument("--seed", type=int, help="shorthand for --set seed=N")
    run.add_argument("--device", help="auto | cpu | cuda | cuda:N (overrides the scenario's device)")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no final table")
    run.add_argument("--workers", type=int, metavar="K",
                     help="run on K local worker processes (torch.distributed; shorthand for --set "
                          "engine.kind=distributed engine.workers=K; see docs/distributed.md)")
    run.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                     help="import a module that registers models, tasks or synthesizers (repeatable)")
    res = sub.add_parser("resume", help="continue a run from its checkpoint, in place, exactly")
    res.add_argument("folder")
    res.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="train.ticks=N (a later end) or train.progress=BOOL; nothing else may change")
    res.add_argument("--quiet", action="store_true", help="no progress bar and no final table")
    ev = sub.add_parser("evaluate", help="score a run's checkpoint on the test split (writes DIR/eval.json)")
    ev.add_argument("folder")
    ev.add_argument("--quiet", action="store_true", help="print nothing (eval.json is still written)")
    val = sub.add_parser("validate", help="check scenario files (schema and graph), no training")
    val.add_argument("files", nargs="+")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    val.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                     help="import a module that registers models, tasks or synthesizers (repeatable)")
    show = sub.add_parser("show", help="print agents, edges, locked components and the clock table")
    show.add_argument("file")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    show.add_argument("--ticks", type=int, help="columns of the clock table (1..1000)")
    show.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                     help="import a module that registers models, tasks or synthesizers (repeatable)")
    plot = sub.add_parser("plot", help="overlay runs' metrics over ticks (seeds of one scenario: mean and spread)")
    plot.add_argument("runs", nargs="+", metavar="RUN")
    plot.add_argument("--metric", dest="metrics", action="append", default=[], metavar="M",
                      help="a logged metric, e.g. test/accuracy (repeatable; default: test accuracy or return)")
    plot.add_argument("--out", default="runs.png", help="image file: .png, .pdf or .svg (default: runs.png)")
    cmp = sub.add_parser("compare", help="print runs' final metrics side by side (seeds of one scenario: "
                         "mean ± sd)")
    cmp.add_argument("runs", nargs="+", metavar="RUN")
    cmp.add_argument("--metric", dest="metrics", action="append", default=[], metavar="M",
                     help="a metric to show (repeatable; default: every test metric)")
    return p


PLOT_FORMATS = (".png", ".pdf", ".svg")


def plot(runs: list[str], metrics: list[str], out: str) -> int:
    """Draw the runs' metrics to ``out`` (one panel per metric, one curve per group of seeds)."""
    from .compare import check_metrics, default_metrics, group_runs, read_runs
    from .plots import plot_groups

    if Path(out).suffix.lower() not in PLOT_FORMATS:
        raise UsageError(f"--out {out}: name an image file ending in {', '.join(PLOT_FORMATS)}")
    found = read_runs(runs)
    metrics = metrics or default_metrics(found)
    if not metrics:
        raise CorporationError(f"{runs[0]}: the runs logged no metric to plot yet")
    check_metrics(found, metrics)
    try:
        path = plot_groups(group_runs(found), metrics, Path(out))
    except OSError as e:
        raise CorporationError(f"--out {out}: {e.strerror or e}; choose another --out") from None
    print(f"wrote {path}")
    return 0


def compare(runs: list[str], metrics: list[str]) -> int:
    """Print the runs' final metrics side by side."""
    from .compare import check_metrics, compare_table, read_runs

    found = read_runs(runs)
    check_metrics(found, metrics)
    print("\n".join(compare_table(found, metrics or None)))
    return 0


def validate(files: list[str], overrides: list[str], imports: list[str] = ()) -> int:
    """Check every file; an ok line on stdout or an error line on stderr for each; 2 if any failed."""
    failed = False
    for f in files:
        try:
            s, unchecked = scenario_mod.check_file(f, overrides, imports)
        except CorporationError as e:
            print(f"error: {e}", file=sys.stderr)
            failed = True
            continue
        notes = "".join(f"; not checked: {note}" for note in unchecked)
        print(one_line(f"{f}: ok ({s.name}: {len(s.agents)} agents, {len(s.edges)} edges{notes})"))
    return 2 if failed else 0


def show(file: str, overrides: list[str], ticks: int | None, imports: list[str] = ()) -> int:
    """Print the scenario's agents, edges, components and clock table (its data need not be installed)."""
    from .show import check_ticks, describe

    check_ticks(ticks)
    print(describe(scenario_mod.check_file(file, overrides, imports)[0], ticks))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if getattr(args, "imports", None):
            plugins.import_all(args.imports, flag=True)
        if args.command == "validate":
            return validate(args.files, args.overrides, args.imports)
        if args.command == "show":
            return show(args.file, args.overrides, args.ticks, args.imports)
        if args.command == "plot":
            return plot(args.runs, args.metrics, args.out)
        if args.command == "compare":
            return compare(args.runs, args.metrics)
        from . import runner

        if args.command == "evaluate":
            result = runner.evaluate_run(args.folder)
            if args.quiet:
                return 0
            width = max(len(k) for k in result)
            for k, v in result.items():
                print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
            return 0
        if args.command == "resume":
            summary = runner.resume_run(args.folder, args.overrides, progress=False if args.quiet else None,
                                        quiet=args.quiet)
            return 130 if summary.get("interrupted") else 0
        overrides = list(args.overrides)
        if args.seed is not None:
            overrides.append(f"seed={args.seed}")
        if args.device is not None:
            overrides.append(f"device={args.device}")
        if args.workers is not None:
            overrides += ["engine.kind=distributed", f"engine.workers={args.workers}"]
        from .launch import under_torchrun

        if under_torchrun():  # torchrun started this process: the world size is its --nproc-per-node x nodes
            overrides += ["engine.kind=distributed", f"engine.workers={os.environ['WORLD_SIZE']}"]
        s = scenario_mod.load(args.file, overrides, imports=args.imports)
        try:
            if s.engine.kind == "distributed":
                from .launch import run_distributed

                summary = run_distributed(s, Path(args.out) if args.out else None,
                                          progress=False if args.quiet else None, quiet=args.quiet,
                                          overwrite=args.overwrite)
            else:
                summary = runner.run_scenario(s, Path(args.out) if args.out else None,
                                              progress=False if args.quiet else None, quiet=args.quiet,
                                              overwrite=args.overwrite)
        except RunFolderError:
            raise
        except CorporationError as e:  # building the engine (device, data): name the scenario's file too
            if args.file in str(e):
                raise
            raise CorporationError(f"{args.file}: {e}") from None
        return 130 if summary.get("interrupted") else 0
    except CorporationError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"error: {one_line(str(e))}; the run folder keeps its metrics and last good checkpoint",
              file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted: the run folder keeps what was logged so far and its last checkpoint", file=sys.stderr)
        return 130
