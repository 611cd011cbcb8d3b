"""Record (or check) the golden metrics: every shipped scenario at a short budget, one ``<name>.jsonl`` each.

The files were recorded from main before the seams redesign (commit 17bd702); ``tests/test_golden.py``
checks that the engine still logs them. Counters (updates, skips, idle ticks, staleness, examples, episodes)
must match exactly and every other value to a relative tolerance of 1e-2 (absolute 1e-4 near zero): the
files were recorded on one CPU, and another CPU's kernels (MKL takes other code paths on AMD than on Intel,
AVX-512 or not) round differently; a few hundred ticks of training amplify that to about 1e-3 (measured on
an AMD EPYC with AVX-512: ff_digits' test/loss 0.10942 vs 0.10928), while a change of behaviour (a default,
an update order, a target) moves them by far more (tests/test_golden.py checks that such a change is
caught). The order of the keys within a line is not compared (since the actor-critic moved to the acting
agent's side, its loss terms are logged after the task's metrics rather than among them). Shipped defaults changed by measurement in issue 14
(hier_rnn's ``interface.sg.normalize: true``, ``history: 3`` and ``sender_step: r2``, A's weight decay 1e-4; copy's and repeat_copy's state
M target ``nstep`` with horizon 4; mnist_fcn's cDNI target ``lambda`` with lam 0.5; speaker_listener's speaker lr
1e-3 with ``sg.normalize: true``); their cases set the old values back, so the files still pin the engine. Re-record only for a named bug fix:

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
    "mnist_fcn": ["task.dataset=digits", "task.batch_size=64", "train.ticks=150", "train.eval_every=75",
                  "interface.sg.target=bootstrap"],
    "hier_rnn": ["train.ticks=400", "train.eval_every=200", "task.test_streams=32", "interface.sg.normalize=false",
                 "interface.sg.history=0", "interface.sg.sender_step=optimizer", "agents.A.optimizer.weight_decay=0"],
    "copy": ["train.ticks=400", "train.eval_every=200", "agents.lstm.state.sg.target=bootstrap"],
    "repeat_copy": ["train.ticks=400", "train.eval_every=200", "agents.lstm.state.sg.target=bootstrap"],
    "char_lm": [f"task.path={HERE / 'corpus.txt'}", "task.batch_size=8", "task.eval_chars=400",
                "task.eval_streams=4", "train.ticks=300", "train.eval_every=150"],
    "cartpole": ["train.ticks=300", "train.eval_every=150", "train.log_every=50", "task.test_episodes=2"],
    "speaker_listener": ["train.ticks=200", "train.eval_every=100", "train.log_every=50", "task.test_episodes=2",
                         "agents.speaker.optimizer.lr=1.0e-4", "interface.sg.normalize=false"],
}


def _clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


RTOL, ATOL = 1e-2, 1e-4  # values computed by float kernels: equal to this tolerance across CPUs (module doc)
EXACT = ("tick", "/updates", "/skipped", "/idle", "/synthetic_inputs", "/staleness", "/staleness_max", "/examples",
         "/episodes", "/env_steps", "/chars", "/dropped_transitions")  # counters: the schedule, on any CPU


def differs(want: str, got: str) -> str | None:
    """None when two metrics lines match (counters exactly, other numbers to RTOL / ATOL), else the first key
    that differs."""
    if want == got:
        return None
    a, b = json.loads(want), json.loads(got)
    if set(a) != set(b):  # the order of keys within a line is not compared (see the module doc)
        return "the keys"
    for k, x in a.items():
        y = b[k]
        if x == y:
            continue
        if k.endswith(EXACT) or not (isinstance(x, float) and isinstance(y, float)):
            return k
        if not math.isclose(x, y, rel_tol=RTOL, abs_tol=ATOL):
            return k
    return None


def record(name: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The metrics.jsonl lines of scenario ``name`` at its golden budget (as the runner writes them), with
    ``extra`` overrides after the case's own."""
    from corporation import Engine, load

    torch.set_num_threads(1)
    engine = Engine(load(ROOT / "scenarios" / f"{name}.yaml", [*COMMON, *CASES[name], *extra]))
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
            keys = [differs(a, b) for a, b in zip(want, lines)]
            same = len(want) == len(lines) and not any(keys)
            bad += not same
            print(f"{name}: {'same' if same else 'DIFFERS'} ({len(lines)} lines)")
            for a, b, k in zip(want, lines, keys):
                if k is not None:
                    print(f"  key {k}\n  golden:", a[:300], "\n  now:   ", b[:300])
                    break
        else:
            path.write_text("".join(x + "\n" for x in lines))
            print(f"{name}: {len(lines)} lines -> {path.relative_to(ROOT)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
