"""Per-agent cost of the engine with many small agents, against hand-written per-agent loops.

Agents: N small MLPs (a body ``{kind: mlp, out: 32}``: linear + ReLU; the task's input port has 64
features) plus a linear output agent ``out`` (10 classes), batch 32, Adam lr 1e-3 (one per agent and one per
M, built by ``corporation.optim.make_optimizer``), one torch thread, CPU, random data held in memory (task
``bench_random`` of benchmarks/common.py). Topologies:

  chain   task.x -> a1 -> a2 -> ... -> aN -> out -> task.y
  fan_in  task.x -> each of a1..aN -> out -> task.y (``out`` reads the N messages concatenated)

Configurations, for each topology and N (``--n``, default 1 10 100 1000):

  dni             the engine (``Engine(from_dict(raw)).step()``), every agent-to-agent edge DNI with a
                  linear M and no context
  naive           the same N + 1 modules and N linear Ms written by hand, per agent: each agent forwards
                  its detached input, its M predicts g_hat from the detached message, the agent
                  backpropagates g_hat / batch (the output agent its loss) and steps its own Adam; then each
                  M regresses (L2, per-example targets batch * dL/dh, as the engine and
                  step_overhead.py's ``dni_by_hand``) on the gradient that reached the receiver's input
                  and steps its own Adam
  backprop        the engine, every edge ``backprop`` (one locked component: one backward, per-agent steps)
  naive_backprop  the same modules joined end to end by hand, one backward, per-agent Adam steps

The figure is the time of one tick divided by the number of agents (N + 1), in microseconds. The
configurations of one N are warmed up, then repetitions are interleaved (dni, naive, backprop, ...) so that
drifts in machine load hit all alike; a repetition times ``--steps`` ticks and the figure is the median over
repetitions of the mean tick time. For N >= 1000 steps and warm-up are capped at ``--big-steps``,
repetitions at ``--big-reps`` (a tick there takes seconds). ``--clock cpu`` times this thread's CPU time.

    python benchmarks/scale.py [--n 1 10 100 1000] [--steps 20] [--reps 7] [--warmup 5]
                               [--clock wall|cpu] [--ratio-n 100] [--profile]
    python benchmarks/scale.py --n 1 10 100          # quick: a minute or so

The output is a table of every configuration, then ``backprop_per_agent/naive_backprop_per_agent: X``
and, on the last line, ``dni_per_agent/naive_per_agent: Y``, both for the chain at ``--ratio-n`` agents
(target: Y <= 1.5).
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import RandomParams, RandomTask, measure

from corporation import Engine, from_dict
from corporation.optim import make_optimizer
from corporation.spec import OptimizerSpec

FEATURES, CLASSES, WIDTH, BATCH, POOL = 64, 10, 32, 32, 1024
TASK = {"kind": "bench_random", "batch_size": BATCH, "pool": POOL, "features": FEATURES, "classes": CLASSES}
TOPOLOGIES = ("chain", "fan_in")
KINDS = ("dni", "naive", "backprop", "naive_backprop")
ADAM = OptimizerSpec(kind="adam", lr=1.0e-3)
Step = Callable[[], None]




def scenario(topology: str, kind: str, n: int) -> dict[str, Any]:
    """N MLP agents a1..aN and a linear ``out``, wired as ``topology``, every agent edge ``kind``."""
    adam = {"kind": "adam", "lr": 1.0e-3}
    names = [f"a{i}" for i in range(1, n + 1)]
    agents: dict[str, Any] = {a: {"model": {"kind": "mlp", "out": WIDTH}, "optimizer": adam} for a in names}
    agents["out"] = {"model": {"kind": "linear"}, "optimizer": adam}
    if topology == "chain":
        path = ["task.x", *names, "out", "task.y"]
        edges = [{"src": s, "dst": d} for s, d in itertools.pairwise(path)]
    else:
        edges = [e for a in names for e in ({"src": "task.x", "dst": a}, {"src": a, "dst": "out"})]
        edges.append({"src": "out", "dst": "task.y"})
    return {"name": f"scale_{topology}_{kind}_{n}", "seed": 0, "device": "cpu", "task": TASK,
            "interface": {"kind": kind, "sg": {"hidden": 0}, "context": None},
            "agents": agents, "edges": edges, "train": {"ticks": 10**9, "eval_every": 10**9}}


def modules(topology: str, n: int) -> tuple[list[nn.Module], nn.Module]:
    """The N agent bodies (64 -> 32 or 32 -> 32, ReLU) and the output layer, as separate modules."""
    sizes = [FEATURES] + [WIDTH if topology == "chain" else FEATURES] * (n - 1)
    bodies: list[nn.Module] = [nn.Sequential(nn.Linear(s, WIDTH), nn.ReLU()) for s in sizes]
    return bodies, nn.Linear(WIDTH if topology == "chain" else WIDTH * n, CLASSES)


def zero_linear(size: int) -> nn.Linear:
    """A linear M, zero-initialised like the engine's (a fresh M predicts g_hat = 0)."""
    m = nn.Linear(size, size)
    nn.init.zeros_(m.weight)
    nn.init.zeros_(m.bias)
    return m


def new_task() -> RandomTask:
    return RandomTask(RandomParams(**{k: v for k, v in TASK.items() if k != "kind"}), torch.device("cpu"),
                      torch.Generator().manual_seed(0))


def naive_step_fn(topology: str, n: int) -> Step:
    """Every-layer DNI by hand, per agent: each agent and each M has its own module, backward and Adam."""
    task, (bodies, head) = new_task(), modules(topology, n)
    ms = [zero_linear(WIDTH) for _ in range(n)]
    opts = [make_optimizer(ADAM, m.parameters()) for m in [*bodies, head]]
    m_opts = [make_optimizer(ADAM, m.parameters()) for m in ms]
    tick = [0]

    def step() -> None:
        t = tick[0]
        x = task.emit(t).inputs["x"]
        hs, g_hats, leaves = [], [], []
        for i, body in enumerate(bodies):  # forward: every agent on its detached input
            h = body(leaves[-1] if topology == "chain" and leaves else x)
            hs.append(h)
            g_hats.append(ms[i](h.detach()))
            leaves.append(h.detach().requires_grad_(True))
        loss = task.loss("y", t, head(leaves[-1] if topology == "chain" else torch.cat(leaves, dim=1)))
        for h, g_hat, opt in zip(hs, g_hats, opts):  # each agent: backward of its g_hat, its own step
            h.backward(g_hat.detach() / BATCH)
            opt.step()
            opt.zero_grad(set_to_none=True)
        loss.backward()  # the output agent: its loss
        opts[-1].step()
        opts[-1].zero_grad(set_to_none=True)
        for g_hat, leaf, m_opt in zip(reversed(g_hats), reversed(leaves), reversed(m_opts)):  # each M
            F.mse_loss(g_hat, leaf.grad * BATCH, reduction="sum").div(BATCH).backward()
            m_opt.step()
            m_opt.zero_grad(set_to_none=True)
        task.forget(t)
        tick[0] += 1

    return step


def naive_backprop_step_fn(topology: str, n: int) -> Step:
    """The same modules joined end to end by hand: one backward, then each agent steps its own Adam."""
    task, (bodies, head) = new_task(), modules(topology, n)
    opts = [make_optimizer(ADAM, m.parameters()) for m in [*bodies, head]]
    tick = [0]

    def step() -> None:
        t = tick[0]
        x = task.emit(t).inputs["x"]
        if topology == "chain":
            h = x
            for body in bodies:
                h = body(h)
        else:
            h = torch.cat([body(x) for body in bodies], dim=1)
        task.loss("y", t, head(h)).backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        task.forget(t)
        tick[0] += 1

    return step


def build(topology: str, kind: str, n: int) -> Step:
    naive = {"naive": naive_step_fn, "naive_backprop": naive_backprop_step_fn}.get(kind)
    return naive(topology, n) if naive else Engine(from_dict(scenario(topology, kind, n))).step


def run_size(n: int, args: argparse.Namespace, clock: Callable[[], float]) -> dict[tuple[str, str], float]:
    """(topology, kind) -> median microseconds per agent per tick, for N = n (configurations interleaved)."""
    big = n >= 1000
    reps, steps = (min(args.reps, args.big_reps), min(args.steps, args.big_steps)) if big else (args.reps, args.steps)
    warmup = min(args.warmup, args.big_steps) if big else args.warmup
    fns = {(top, kind): build(top, kind, n) for top in TOPOLOGIES for kind in KINDS}
    med = measure({f"{t}/{k}": fn for (t, k), fn in fns.items()}, reps, steps, warmup, clock)
    return {key: med[f"{key[0]}/{key[1]}"] * 1e6 / (n + 1) for key in fns}


def profile(n: int, ticks: int) -> None:
    """cProfile of the engine's DNI chain at N = n (own time per function, top 25)."""
    import cProfile
    import pstats

    step = build("chain", "dni", n)
    step()
    print(f"--- cProfile of the engine, chain, dni, N = {n}, {ticks} ticks ---")
    prof = cProfile.Profile()
    with prof:
        for _ in range(ticks):
            step()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1, 10, 100, 1000], help="numbers of MLP agents")
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions")
    ap.add_argument("--steps", type=int, default=20, help="ticks per repetition")
    ap.add_argument("--warmup", type=int, default=5, help="untimed ticks per configuration first")
    ap.add_argument("--big-steps", type=int, default=5, help="cap on steps and warm-up for N >= 1000")
    ap.add_argument("--big-reps", type=int, default=3, help="cap on repetitions for N >= 1000")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: perf_counter; cpu: this thread's CPU time (steadier on a shared machine)")
    ap.add_argument("--ratio-n", type=int, default=100, help="the N of the two ratio lines (must be in --n)")
    ap.add_argument("--profile", action="store_true", help="also cProfile the engine's DNI chain at --ratio-n")
    args = ap.parse_args(argv)
    if args.ratio_n not in args.n:
        ap.error(f"--ratio-n {args.ratio_n} is not one of --n {args.n}")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    print(f"torch {torch.__version__}, threads 1, batch {BATCH}, agents {FEATURES}->{WIDTH} MLPs + linear out, "
          f"{args.reps} reps x {args.steps} ticks, warm-up {args.warmup}, clock {args.clock}; us per agent per tick")
    print(f"{'topology':>8} {'N':>5} " + " ".join(f"{k:>14}" for k in KINDS) + f" {'dni/naive':>10} {'bp/naive_bp':>11}")
    ratios: dict[str, float] = {}
    for n in args.n:
        us = run_size(n, args, clock)
        for top in TOPOLOGIES:
            r_dni = us[(top, "dni")] / us[(top, "naive")]
            r_bp = us[(top, "backprop")] / us[(top, "naive_backprop")]
            ratios[f"{top}/{n}/dni/naive"], ratios[f"{top}/{n}/backprop/naive_backprop"] = r_dni, r_bp
            print(f"{top:>8} {n:>5} " + " ".join(f"{us[(top, k)]:14.1f}" for k in KINDS)
                  + f" {r_dni:10.3f} {r_bp:11.3f}", flush=True)
    if args.profile:
        profile(args.ratio_n, args.steps)
    ratios["backprop_per_agent/naive_backprop_per_agent"] = ratios[f"chain/{args.ratio_n}/backprop/naive_backprop"]
    ratios["dni_per_agent/naive_per_agent"] = ratios[f"chain/{args.ratio_n}/dni/naive"]
    print(f"backprop_per_agent/naive_backprop_per_agent: {ratios['backprop_per_agent/naive_backprop_per_agent']:.3f}")
    print(f"dni_per_agent/naive_per_agent: {ratios['dni_per_agent/naive_per_agent']:.3f}")
    return ratios


if __name__ == "__main__":
    main()
