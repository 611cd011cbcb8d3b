"""Per-step overhead of the engine against a plain PyTorch loop (issue #2).

Model: a 784-256-256-256-256-10 MLP (linear + batch norm + ReLU hidden layers, linear output), batch 256,
Adam (built by ``corporation.optim.make_optimizer`` everywhere, so every configuration runs the same Adam
implementation), synthetic random data held in memory (no dataset). Configurations, all in one process:

  plain           a hand-written PyTorch loop: one nn.Sequential, one Adam, one backward per step
  engine_backprop the engine on the same layers as 5 agents joined by ``backprop`` edges (``Engine.step``)
  dni_linear      the engine, every-layer DNI with a linear M (no context)
  dni_mlp2        the engine, every-layer DNI with a 2-hidden-layer M of width 1024 (the paper's DNI M)
  dni_by_hand     every-layer DNI with a linear M written by hand without the engine (one backward for
                  the layers, one for the Ms, one Adam): the cost of the algorithm itself, a floor for
                  dni_linear

Each configuration is warmed up, then repetitions are interleaved (plain, engine_backprop, ...) so drifts
in machine load hit all of them alike; a repetition times ``--steps`` steps and the reported figure is the
median over repetitions of the mean step time. ``--clock cpu`` times the main thread's CPU time instead of
wall time (steadier on a shared machine; with one torch thread all the work runs on that thread).

    python benchmarks/step_overhead.py [--threads 1] [--reps 15] [--steps 20] [--clock wall|cpu]
                                       [--profile cprofile|torch]

The ratio lines come last; the last two are ``engine_backprop/plain: X`` and ``dni_linear/plain: Y``.
Targets (issue 12): ``engine_backprop/plain <= 1.05`` and ``dni_linear/dni_by_hand <= 1.10`` (the engine's
cost over the algorithm itself; dni_by_hand/plain, about 1.5-1.7, is what DNI itself costs on one core).
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

FEATURES, CLASSES, HIDDEN, DEPTH, BATCH, POOL = 784, 10, 256, 4, 256, 4096




def scenario(kind: str, sg_hidden: int = 0) -> dict[str, Any]:
    """The benchmark MLP as DEPTH hidden layer-agents + a linear output agent."""
    adam = {"kind": "adam", "lr": 1.0e-3}
    agents = {f"l{i}": {"model": {"kind": "mlp", "out": HIDDEN, "batchnorm": True}, "optimizer": adam}
              for i in range(1, DEPTH + 1)}
    agents[f"l{DEPTH + 1}"] = {"model": {"kind": "linear"}, "optimizer": adam}
    names = list(agents)
    edges = [{"src": "task.x", "dst": names[0]}]
    edges += [{"src": a, "dst": b} for a, b in itertools.pairwise(names)]
    edges.append({"src": names[-1], "dst": "task.y"})
    return {"name": f"bench_{kind}", "seed": 0, "device": "cpu", "task": {"kind": "bench_random"},
            "interface": {"kind": kind, "sg": {"hidden": sg_hidden, "width": 1024}, "context": None},
            "agents": agents, "edges": edges, "train": {"ticks": 10**9, "eval_every": 10**9}}


ADAM = OptimizerSpec(kind="adam", lr=1.0e-3)


def layers() -> list[nn.Module]:
    """The benchmark MLP as DEPTH + 1 modules (hidden blocks, then the output layer)."""
    blocks: list[nn.Module] = []
    size = FEATURES
    for _ in range(DEPTH):
        blocks.append(nn.Sequential(nn.Linear(size, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU()))
        size = HIDDEN
    return [*blocks, nn.Linear(size, CLASSES)]


def plain_step_fn() -> Callable[[], None]:
    """One step of the plain loop: the same layers, one Adam over all of them, the same data."""
    task = RandomTask(RandomParams(), torch.device("cpu"), torch.Generator().manual_seed(0))
    model = nn.Sequential(*layers())
    opt = make_optimizer(ADAM, model.parameters())
    tick = [0]

    def step() -> None:
        x = task.emit(tick[0]).inputs["x"]
        loss = task.loss("y", tick[0], model(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        task.forget(tick[0])
        tick[0] += 1

    return step


def dni_by_hand_step_fn() -> Callable[[], None]:
    """Every-layer DNI with linear Ms, as the engine computes it (per-example targets B * dL/dh, M fresh at
    zero, the L2 loss summed over units and averaged over examples) but without the engine's bookkeeping."""
    task = RandomTask(RandomParams(), torch.device("cpu"), torch.Generator().manual_seed(0))
    body = layers()
    ms = [nn.Linear(HIDDEN, HIDDEN) for _ in range(DEPTH)]
    for m in ms:
        nn.init.zeros_(m.weight)
        nn.init.zeros_(m.bias)
    opt = make_optimizer(ADAM, [p for mod in [*body, *ms] for p in mod.parameters()])
    tick = [0]

    def step() -> None:
        x = task.emit(tick[0]).inputs["x"]
        outs, grads, g_hats, leaves = [], [], [], []
        for i, block in enumerate(body):
            h = block(x)
            if i == DEPTH:
                outs.append(task.loss("y", tick[0], h))
                grads.append(None)
                break
            g_hat = ms[i](h.detach())
            outs.append(h)
            grads.append(g_hat.detach() / BATCH)
            g_hats.append(g_hat)
            x = h.detach().requires_grad_(True)
            leaves.append(x)
        torch.autograd.backward(outs, grads)  # the layers (independent graphs): one call
        m_loss = sum(F.mse_loss(g, leaf.grad * BATCH, reduction="sum") / BATCH for g, leaf in zip(g_hats, leaves))
        m_loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        task.forget(tick[0])
        tick[0] += 1

    return step


def configs() -> dict[str, Callable[[], None]]:
    """name -> a zero-argument callable that runs one training step."""
    out = {"plain": plain_step_fn()}
    for name, kind, hidden in (("engine_backprop", "backprop", 0), ("dni_linear", "dni", 0),
                               ("dni_mlp2", "dni", 2)):
        out[name] = Engine(from_dict(scenario(kind, hidden))).step
    out["dni_by_hand"] = dni_by_hand_step_fn()
    return out


def profile(fn: Callable[[], None], how: str, n: int, label: str) -> None:
    """Print where one configuration's time goes: cProfile (cumulative) or torch.profiler (self CPU)."""
    import cProfile
    import pstats

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    print(f"--- profile of {label} ({how}, {n} steps) ---")
    prof: Any = cProfile.Profile() if how == "cprofile" else torch_profile(activities=[ProfilerActivity.CPU])
    with prof:
        for _ in range(n):
            fn()
    if how == "cprofile":
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    else:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--reps", type=int, default=15, help="interleaved repetitions")
    ap.add_argument("--steps", type=int, default=20, help="steps per repetition")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps per configuration first")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: perf_counter; cpu: this thread's CPU time (steadier on a shared machine)")
    ap.add_argument("--profile", choices=["cprofile", "torch"], help="also profile the engine configs")
    ap.add_argument("--profile-steps", type=int, default=50)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {BATCH}, "
          f"MLP {FEATURES}-{'-'.join([str(HIDDEN)] * DEPTH)}-{CLASSES} (BN+ReLU), "
          f"{args.reps} reps x {args.steps} steps, warm-up {args.warmup}, clock {args.clock}")
    steps = configs()
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    med = measure(steps, args.reps, args.steps, args.warmup, clock)
    for name, t in med.items():
        print(f"{name:>16}: {t * 1e3:8.3f} ms/step")
    if args.profile:
        for name in ("plain", "engine_backprop", "dni_linear"):
            profile(steps[name], args.profile, args.profile_steps, name)
    ratios = {"dni_linear/dni_by_hand": med["dni_linear"] / med["dni_by_hand"]}
    ratios.update({f"{k}/plain": med[k] / med["plain"]
                   for k in ("dni_by_hand", "dni_mlp2", "engine_backprop", "dni_linear")})
    for k, r in ratios.items():
        print(f"{k}: {r:.3f}")
    return ratios


if __name__ == "__main__":
    main()
