"""Ablation of M's target and optimisation options (issue 14) on the feed-forward every-layer DNI.

Same networks and budgets as experiments/feedforward.py (L weight layers: L-1 hidden layer-agents of 256
with batch norm + ReLU and a linear output agent; Adam 1e-3; batch 256; one evaluation at the end).
Unconditioned DNI with M = 2 hidden layers of 256 (as feedforward.md), varied one option at a time:

  dni               the shipped DNI (bootstrap target, gamma 1)
  gamma_0.5         sg.gamma 0.5 (discounted bootstrap)
  lambda_0.5        sg.target lambda, lam 0.5 (BP(lambda)-style lambda-return down the chain)
  exact             sg.target exact (M on the true gradient: a diagnosis, not decoupled in its targets)
  normalize         sg.normalize (M predicts targets in units of their running RMS)
  clip_error_1      sg.clip_error 1 (each example's regression error capped at norm 1)
  sender_r2         sg.sender_step r2 (a g_hat-only sender's lr times clamp(M's running r2, 0, 1))
  m_lr_1e-4         sg.optimizer adam 1e-4 (M slower than the layers)
  dfa               sg.kind dfa (Direct Feedback Alignment: the output error through a fixed random matrix)
  fa                sg.kind fa (Feedback Alignment: the receiver's backward, its first layer's W replaced by a
                    fixed random B; locked backward)
  bp_lambda_0.5     interface.kind bp_lambda, lam 0.5 (half true, half synthetic gradient)
  bp_lambda_0.9     interface.kind bp_lambda, lam 0.9

combinations (screened on Fashion-MNIST at 3 layers: can the r2-scaled sender step close the gap to backprop?):

  sender_r2_lambda_0.5     sender_r2 with sg.target lambda, lam 0.5 (a target that reaches back to the loss)
  sender_r2_normalize      sender_r2 with sg.normalize (M's best fit of its targets: a larger r2, so larger steps)
  sender_r2_bn             sender_r2 with batch norm in M's hidden layers (the paper's M)
  sender_r2_bn_1024        sender_r2 with the paper's M for DNI: 2 x 1024 with batch norm
  sender_r2_bn_lambda_0.5  sender_r2_bn with sg.target lambda, lam 0.5
  sender_r2_bn_1024_lambda_0.5  sender_r2_bn_1024 with sg.target lambda, lam 0.5 (deeper Ms' targets reach the loss)
  sender_r2_bn_1024_lr3x / _lr10x  sender_r2_bn_1024 with the hidden layers' Adam lr 3x / 10x (the output layer's
                           stays): under the r2 gate (r2 ~0.07) they step at a few % of their lr
  backprop_lr3x            backprop with the same 3x lr for the hidden layers (the control of _lr3x)
  sender_r2_m_lr_1e-4      sender_r2 with M's Adam lr 1e-4 (M slower than the layers, as public Copy code)
  sender_snr               sg.sender_step snr (lr x RMS(g_hat) / RMS(target): Adam's step under the true gradient)

cDNI (M linear in (h, label), as feedforward.md) variants, screened where cDNI trails backprop (4-6 layers):

  cdni_r2, cdni_hidden1 (M: one hidden layer of 256), cdni_clip_error_1, cdni_lambda_0.5

plus the references no_backprop / backprop / cdni. Each row also reports M's r2 and cosine against its own
target at the end (mean over edges). Results: ``--json`` (reused on reruns) and ``--out`` (Markdown).

    OMP_NUM_THREADS=1 python experiments/sg_targets.py --layers 5 --seeds 0 1
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))
from feedforward import scenario

from corporation import Engine, from_dict

DNI_M = {"hidden": 2, "width": 256}
PAPER_M_R2 = {"hidden": 2, "width": 1024, "batchnorm": True, "sender_step": "r2"}  # the paper's DNI M, the r2 step
VARIANTS: dict[str, dict[str, Any]] = {
    "no_backprop": {"kind": "dni", "sg": {"hidden": 0, "scale": 0.0}, "context": None},
    "backprop": {"kind": "backprop"},
    "backprop_lr3x": {"kind": "backprop"},
    "cdni": {"kind": "dni", "sg": {"hidden": 0}, "context": "task.y"},
    "dni": {"kind": "dni", "sg": dict(DNI_M), "context": None},
    "gamma_0.5": {"kind": "dni", "sg": {**DNI_M, "gamma": 0.5}, "context": None},
    "lambda_0.5": {"kind": "dni", "sg": {**DNI_M, "target": "lambda", "lam": 0.5}, "context": None},
    "exact": {"kind": "dni", "sg": {**DNI_M, "target": "exact"}, "context": None},
    "normalize": {"kind": "dni", "sg": {**DNI_M, "normalize": True}, "context": None},
    "clip_error_1": {"kind": "dni", "sg": {**DNI_M, "clip_error": 1.0}, "context": None},
    "sender_r2": {"kind": "dni", "sg": {**DNI_M, "sender_step": "r2"}, "context": None},
    "m_lr_1e-4": {"kind": "dni", "sg": {**DNI_M, "optimizer": {"kind": "adam", "lr": 1e-4}}, "context": None},
    "dfa": {"kind": "dni", "sg": {"kind": "dfa"}, "context": None},
    "fa": {"kind": "dni", "sg": {"kind": "fa"}, "context": None},
    "bp_lambda_0.5": {"kind": "bp_lambda", "lam": 0.5, "sg": dict(DNI_M), "context": None},
    "bp_lambda_0.9": {"kind": "bp_lambda", "lam": 0.9, "sg": dict(DNI_M), "context": None},
    "sender_r2_lambda_0.5": {"kind": "dni", "sg": {**DNI_M, "sender_step": "r2", "target": "lambda", "lam": 0.5},
                             "context": None},
    "sender_r2_normalize": {"kind": "dni", "sg": {**DNI_M, "sender_step": "r2", "normalize": True}, "context": None},
    "sender_r2_bn": {"kind": "dni", "sg": {**DNI_M, "sender_step": "r2", "batchnorm": True}, "context": None},
    "sender_r2_bn_1024": {"kind": "dni", "sg": dict(PAPER_M_R2), "context": None},
    "sender_r2_m_lr_1e-4": {"kind": "dni", "sg": {**DNI_M, "sender_step": "r2",
                                                  "optimizer": {"kind": "adam", "lr": 1e-4}}, "context": None},
    "sender_r2_bn_lambda_0.5": {"kind": "dni", "sg": {**DNI_M, "sender_step": "r2", "batchnorm": True,
                                                      "target": "lambda", "lam": 0.5}, "context": None},
    "sender_r2_bn_1024_lambda_0.5": {"kind": "dni", "sg": {**PAPER_M_R2, "target": "lambda", "lam": 0.5},
                                     "context": None},
    "sender_r2_bn_1024_lr3x": {"kind": "dni", "sg": dict(PAPER_M_R2), "context": None},
    "sender_r2_bn_1024_lr10x": {"kind": "dni", "sg": dict(PAPER_M_R2), "context": None},
    "sender_snr": {"kind": "dni", "sg": {**DNI_M, "sender_step": "snr"}, "context": None},
    "cdni_r2": {"kind": "dni", "sg": {"hidden": 0, "sender_step": "r2"}, "context": "task.y"},
    "cdni_hidden1": {"kind": "dni", "sg": {"hidden": 1, "width": 256}, "context": "task.y"},
    "cdni_clip_error_1": {"kind": "dni", "sg": {"hidden": 0, "clip_error": 1.0}, "context": "task.y"},
    "cdni_lambda_0.5": {"kind": "dni", "sg": {"hidden": 0, "target": "lambda", "lam": 0.5}, "context": "task.y"},
}
# variants that also change the hidden layers' Adam lr (the output layer keeps 1e-3)
HIDDEN_LR = {"backprop_lr3x": 3e-3, "sender_r2_bn_1024_lr3x": 3e-3, "sender_r2_bn_1024_lr10x": 1e-2}


def run_one(dataset: str, layers: int, variant: str, seed: int, ticks: int, tail: int = 1) -> dict[str, Any]:
    """Train one variant; test error %, M's final r2 / cosine (mean over edges), wall seconds.

    tail > 1: the test error is the mean of the last ``tail`` of 12 evaluations spread over the run (one every
    ticks / 12), not the single final one: without lr decay the lower layers keep moving under batch noise, and
    one final evaluation of an unconditioned DNI can land several points off its neighbours.
    """
    raw = scenario(dataset, layers, "dni", seed, ticks, 1e-3, DNI_M["hidden"], DNI_M["width"])
    raw["interface"] = VARIANTS[variant]
    for name in list(raw["agents"])[:-1] if variant in HIDDEN_LR else []:
        raw["agents"][name]["optimizer"] = {**raw["agents"][name]["optimizer"], "lr": HIDDEN_LR[variant]}
    raw["train"]["log_every"] = max(ticks // 12, 1) if tail > 1 else max(ticks // 10, 1)
    if tail > 1:
        raw["train"]["eval_every"] = raw["train"]["log_every"]
    errors: list[float] = []
    wall = time.perf_counter()
    last = Engine(from_dict(raw)).run(
        on_log=lambda r: errors.append(100.0 * (1.0 - r["test/accuracy"])) if "test/accuracy" in r else None)
    mean = (lambda xs: statistics.fmean(xs) if xs else float("nan"))
    out = {"test_error": 100.0 * (1.0 - last["test/accuracy"]),
           "r2": mean([v for k, v in last.items() if k.startswith("sg/") and k.endswith("/r2")]),
           "cosine": mean([v for k, v in last.items() if k.startswith("sg/") and k.endswith("/cosine")]),
           "wall_s": time.perf_counter() - wall}
    if tail > 1:
        out.update(final_error=out["test_error"], test_error=mean(errors[-tail:]), curve=errors)
    return out


HIER = {  # scenarios/hier_rnn.yaml (T = 4) overrides
    "dni": [], "locked": ["interface.kind=backprop"], "normalize": ["interface.sg.normalize=true"],
    "clip_error_1": ["interface.sg.clip_error=1.0"], "m_lr_1e-4": ["interface.sg.optimizer.lr=1e-4"],
    "gamma_0.5": ["interface.sg.gamma=0.5"],
}


def run_hier(variant: str, seed: int, ticks: int, every: int) -> dict[str, Any]:
    """hier_rnn at T = 4: B's (and A's) test accuracy, mean of the last 3 evaluations; M's r2 / cosine."""
    from corporation import load
    engine = Engine(load(ROOT / "scenarios/hier_rnn.yaml", [*HIER[variant], f"seed={seed}", "device=cpu"]))
    wall, curve = time.perf_counter(), []
    while engine.tick < ticks:
        for _ in range(every):
            engine.step()
        curve.append({**engine.collect(), **engine.evaluate()})
    last = curve[-3:]
    avg = (lambda k: statistics.fmean(c.get(k, float("nan")) for c in last))
    return {"B": avg("test/B/accuracy"), "A": avg("test/A/accuracy"), "r2": avg("sg/A-B/r2"),
            "cosine": avg("sg/A-B/cosine"), "wall_s": time.perf_counter() - wall}


def cell(xs: list[float], digits: int = 1) -> str:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.fmean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def table(results: list[dict[str, Any]], dataset: str) -> list[str]:
    layers = sorted({r["layers"] for r in results if r["dataset"] == dataset})
    head = "| variant | " + " | ".join(f"L={n} error % | L={n} M r2 / cos" for n in layers) + " | seeds |"
    lines = [head, "|" + "---|" * (2 * len(layers) + 2)]
    for v in VARIANTS:
        rows = [r for r in results if r["dataset"] == dataset and r["variant"] == v]
        if not rows:
            continue
        cells = []
        for n in layers:
            rs = [r for r in rows if r["layers"] == n]
            cells += [cell([r["test_error"] for r in rs]),
                      f"{cell([r['r2'] for r in rs], 2)} / {cell([r['cosine'] for r in rs], 2)}"]
        seeds = sorted({r["seed"] for r in rows})
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {', '.join(map(str, seeds))} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--layers", nargs="+", type=int, default=[5])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--ticks", type=int, default=2000)
    ap.add_argument("--tail", type=int, default=1,
                    help="report the mean test error of the last N of 12 evaluations (1: the final one only)")
    ap.add_argument("--hier", nargs="*", default=None, choices=list(HIER),
                    help="instead: hier_rnn T=4 with these variants (budget --ticks, eval every --ticks/20)")
    ap.add_argument("--json", type=Path, default=ROOT / "runs/sg_targets/results.json")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/sg_targets/table.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    done: list[dict[str, Any]] = json.loads(args.json.read_text()) if args.json.exists() else []
    args.json.parent.mkdir(parents=True, exist_ok=True)
    if args.hier is not None:
        for v in args.hier:
            for s in args.seeds:
                key = {"dataset": "hier_rnn_T4", "variant": v, "seed": s, "ticks": args.ticks}
                prev = next((r for r in done if all(r.get(k) == x for k, x in key.items())), None)
                if prev is None:
                    prev = {**key, **run_hier(v, s, args.ticks, max(args.ticks // 20, 1))}
                    done.append(prev)
                    args.json.write_text(json.dumps(done, indent=1))
                print(f"hier_rnn T=4 {v:<13} seed {s}: B {prev['B']:.3f} A {prev['A']:.3f} M r2 {prev['r2']:+.2f} "
                      f"cos {prev['cosine']:+.2f} ({prev['wall_s']:.0f} s)", flush=True)
        return
    grid = [(n, v, s) for s in args.seeds for n in args.layers for v in args.variants]
    for i, (n, v, s) in enumerate(grid, 1):
        key = {"dataset": args.dataset, "layers": n, "variant": v, "seed": s, "ticks": args.ticks,
               **({"tail": args.tail} if args.tail > 1 else {})}
        prev = next((r for r in done if all(r.get(k) == x for k, x in key.items())), None)
        if prev is None:
            prev = {**key, **run_one(args.dataset, n, v, s, args.ticks, args.tail)}
            done.append(prev)
            args.json.write_text(json.dumps(done, indent=1))
        print(f"[{i}/{len(grid)}] {args.dataset} L={n} {v:<14} seed {s}: error {prev['test_error']:5.2f}%  "
              f"M r2 {prev['r2']:+.2f} cos {prev['cosine']:+.2f}  ({prev['wall_s']:.0f} s)", flush=True)
    mine = [r for r in done if r["dataset"] == args.dataset and r["ticks"] == args.ticks
            and r.get("tail", 1) == args.tail]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join([f"## {args.dataset} ({args.ticks} ticks)", "", *table(mine, args.dataset), ""]))
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
