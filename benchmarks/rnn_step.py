"""Per-tick cost of DNI on the carried state vs plain truncated BPTT, same T, same process.

Two engines on scenarios/char_lm.yaml (an LSTM, a loss at every tick) over a generated temporary UTF-8
text (so no corpus is needed), differing only in ``state.kind``; they run in alternating rounds (so background load hits both alike) after a warm-up, and the median seconds per
tick of each is compared. DNI's extra work per window: M's forward on (h, c), g_hat added to the backward
pass, and one regression step of M. Single-threaded by default.

    python benchmarks/rnn_step.py [--unroll 4] [--hidden 256] [--batch 32] [--ticks 500] [--rounds 5]

The last line is ``rnn_dni/bptt: X`` (X = DNI's cost per tick / BPTT's).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corporation import Engine, load


def corpus(folder: Path) -> Path:
    """A 200,000-character text of random lowercase words (seeded)."""
    g = torch.Generator().manual_seed(0)
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    words = ["".join(letters[int(i)] for i in torch.randint(0, 26, (int(n),), generator=g))
             for n in torch.randint(1, 9, (40000,), generator=g)]
    path = folder / "words.txt"
    path.write_text(" ".join(words)[:200000], encoding="utf-8")
    return path


def engine(kind: str, args: argparse.Namespace, text: Path) -> Engine:
    sets = [f"agents.lstm.state.kind={kind}", f"agents.lstm.update.unroll={args.unroll}",
            f"agents.lstm.model.hidden={args.hidden}", f"task.batch_size={args.batch}", f"task.path={text}",
            "train.eval_every=1000000000", "train.progress=false", "device=cpu"]
    if kind == "dni_aux":
        sets[0] = "agents.lstm.state.kind=dni"
        sets.append("agents.lstm.state.aux=true")
    return Engine(load(ROOT / "scenarios" / "char_lm.yaml", sets))


def per_tick(e: Engine, ticks: int) -> float:
    start = time.perf_counter()
    for _ in range(ticks):
        e.step()
    return (time.perf_counter() - start) / ticks


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--unroll", type=int, default=4, help="the window T, the same for both")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--ticks", type=int, default=500, help="ticks per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--aux", action="store_true", help="also time DNI + Aux")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    kinds = ["bptt", "dni"] + (["dni_aux"] if args.aux else [])
    with tempfile.TemporaryDirectory() as tmp:
        text = corpus(Path(tmp))
        engines = {k: engine(k, args, text) for k in kinds}
    for e in engines.values():
        per_tick(e, max(50, args.ticks // 5))  # warm-up (allocator, Adam state)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for k in kinds:
            times[k].append(per_tick(engines[k], args.ticks))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"LSTM hidden {args.hidden}, batch {args.batch}, T = {args.unroll}, {args.rounds} rounds of "
          f"{args.ticks} ticks, {args.threads} thread(s), torch {torch.__version__}")
    for k in kinds:
        print(f"{k:8s} {med[k] * 1e3:.3f} ms/tick (rounds: {', '.join(f'{t * 1e3:.3f}' for t in times[k])})")
    if args.aux:
        print(f"rnn_dni_aux/bptt: {med['dni_aux'] / med['bptt']:.3f}")
    print(f"rnn_dni/bptt: {med['dni'] / med['bptt']:.3f}")


if __name__ == "__main__":
    main()
