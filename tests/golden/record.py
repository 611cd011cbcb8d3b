"""Record (or check) the golden metrics: every shipped scenario at a short budget, one ``<name>.jsonl`` each.

The files were recorded from main before the seams redesign (commit 17bd702); ``tests/test_golden.py``
checks that the engine still logs them byte for byte. Re-record only for a change that is a named bug fix:

    python tests/golden/record.py            # writes tests/golden/*.jsonl
    python tests/golden/record.py --check    # compares, prints the first differing line per scenario

Budgets are a few hundred ticks (RL: a few thousand env steps); datasets and corpora that a fresh machine
lacks are replaced by the bundled digits and the small corpus beside this file.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COMMON = ["device=cpu"]
CASES: dict[str, list[str]] = {
    "ff_digits": ["train.ticks=200", "train.eval_every=100"],
    "async_updates": ["train.ticks=200", "train.eval_every=100"],
    "corporation": ["train.ticks=200", "train.eval_every=100"],
    "mnist_fcn": ["task.dataset=digits", "task.batch_size=64", "train.ticks=150", "train.eval_every=75"],
    "hier_rnn": ["train.ticks=400", "train.eval_every=200", "task.test_streams=32"],
    "copy": ["train.ticks=400", "train.eval_every=200"],
    "repeat_copy": ["train.ticks=400", "train.eval_every=200"],
    "char_lm": [f"task.path={HERE / 'corpus.txt'}", "task.batch_size=8", "task.eval_chars=400",
                "task.eval_streams=4", "train.ticks=300", "train.eval_every=150"],
    "cartpole": ["train.ticks=300", "train.eval_every=150", "train.log_every=50", "task.test_episodes=2"],
    "speaker_listener": ["train.ticks=200", "train.eval_every=100", "train.log_every=50", "task.test_episodes=2"],
}


def _clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def record(name: str) -> list[str]:
    """The metrics.jsonl lines of scenario ``name`` at its golden budget (as the runner writes them)."""
    from corporation import Engine, load

    torch.set_num_threads(1)
    engine = Engine(load(ROOT / "scenarios" / f"{name}.yaml", [*COMMON, *CASES[name]]))
    lines: list[str] = []
    engine.run(on_log=lambda r: lines.append(json.dumps({k: _clean(v) for k, v in r.items()})))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("names", nargs="*", default=list(CASES))
    args = ap.parse_args()
    bad = 0
    for name in args.names:
        lines = record(name)
        path = HERE / f"{name}.jsonl"
        if args.check:
            want = path.read_text().splitlines()
            same = want == lines
            bad += not same
            print(f"{name}: {'identical' if same else 'DIFFERS'} ({len(lines)} lines)")
            if not same:
                for a, b in zip(want, lines):
                    if a != b:
                        print("  golden:", a[:300], "\n  now:   ", b[:300])
                        break
        else:
            path.write_text("".join(x + "\n" for x in lines))
            print(f"{name}: {len(lines)} lines -> {path.relative_to(ROOT)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
