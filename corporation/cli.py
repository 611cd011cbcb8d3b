"""Command line: ``python -m corporation run|validate|show``. User errors exit 2 with one line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import scenario as scenario_mod
from .errors import CorporationError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corporation", description="Train systems of neural networks that "
                                "learn together through Decoupled Neural Interfaces.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train a scenario and write its run folder")
    run.add_argument("file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override any scenario key, e.g. --set interface.kind=backprop (repeatable)")
    run.add_argument("--out", help="run folder (default runs/<name>-<seed>/)")
    run.add_argument("--seed", type=int, help="shorthand for --set seed=N")
    run.add_argument("--device", help="auto | cpu | cuda | cuda:N (overrides the scenario's device)")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no final table")
    val = sub.add_parser("validate", help="check scenario files (schema and graph), no training")
    val.add_argument("files", nargs="+")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    show = sub.add_parser("show", help="print agents, edges, locked components and the clock table")
    show.add_argument("file")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    show.add_argument("--ticks", type=int, help="columns of the clock table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "validate":
            for f in args.files:
                s = scenario_mod.load(f, args.overrides)
                print(f"{f}: ok ({s.name}: {len(s.agents)} agents, {len(s.edges)} edges)")
            return 0
        if args.command == "show":
            from .show import describe

            print(describe(scenario_mod.load(args.file, args.overrides), args.ticks))
            return 0
        overrides = list(args.overrides)
        if args.seed is not None:
            overrides.append(f"seed={args.seed}")
        if args.device is not None:
            overrides.append(f"device={args.device}")
        s = scenario_mod.load(args.file, overrides)
        from .runner import run_scenario

        run_scenario(s, Path(args.out) if args.out else None, progress=False if args.quiet else None,
                     quiet=args.quiet)
        return 0
    except CorporationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the run folder keeps what was logged so far", file=sys.stderr)
        return 130
