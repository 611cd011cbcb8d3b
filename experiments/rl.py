"""The RL experiments of docs/results/rl.md: CartPole (backprop vs DNI between perception and control) and
MPE speaker-listener (DNI communication vs a speaker with no learning signal vs DIAL-style backprop).

    python experiments/rl.py run cartpole --seeds 0 1 2 [--jobs 2]
    python experiments/rl.py run speaker_listener --seeds 0 1 2
    python experiments/rl.py report          # tables (stdout) + docs/results/rl_*.png
    python experiments/rl.py baselines       # scripted speaker-listener reference returns

Each run is ``python -m corporation run`` in a subprocess (single-threaded) writing runs/rl/<exp>-<variant>-<seed>/,
reused when the folder holds a finished run of the same settings (corporation.report). The report reads those
folders only (``python -m corporation plot|compare`` read them too).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout
from corporation.compare import Group, read_run
from corporation.errors import CorporationError
from corporation.plots import plot_curves
from corporation.report import Cell, cached_run, finished

RUNS = ROOT / "runs" / "rl"
DOCS = ROOT / "docs" / "results"
COMM = {"dni": [], "no_signal": ["interface.sg.scale=0"], "backprop": ["interface.kind=backprop"],
        "dni_no_context": ["interface.context=null"]}
M_LR = "interface.sg.optimizer={kind: adam, lr: 1.0e-4}"
PLAIN = ["interface.sg.normalize=false"]  # M regresses on the raw targets (the speaker_listener file before issue 14)
EXPERIMENTS = {
    "cartpole": {"dni": [], "backprop": ["interface.kind=backprop"]},
    # oracle: the speaker->listener edge replaced by the goal colour itself (a perfect message, no speaker):
    # the ceiling of the listener's A2C at this budget.
    "speaker_listener": {**COMM, "oracle": ["edges.2={src: task.speaker_0_obs, dst: listener}"],
                         # issue 14. The file's speaker: Adam 1e-3 (backprop's lr) with M regressing in units of
                         # its targets' running RMS (sg.normalize: M's own Adam steps no longer dwarf targets of
                         # size ~3e-3). Each variant below names every setting it depends on, so it means the
                         # same under the file before that change (speaker lr 1e-4, normalize off) and after.
                         "dni_norm_lr1e-3": ["agents.speaker.optimizer.lr=1e-3", "interface.sg.normalize=true"],
                         "backprop_lr1e-3": ["interface.kind=backprop", "agents.speaker.optimizer.lr=1e-3"],
                         # the file before: both speakers at 1e-4 (plain DNI needed it)
                         "dni_lr1e-4": [*PLAIN, "agents.speaker.optimizer.lr=1e-4"],
                         "backprop_lr1e-4": ["interface.kind=backprop", "agents.speaker.optimizer.lr=1e-4"],
                         "dni_norm_lr1e-4": ["agents.speaker.optimizer.lr=1e-4", "interface.sg.normalize=true"],
                         # plain DNI at backprop's lr, and the step rules tried on it: r2 scales a g_hat-only
                         # sender's lr by clamp(M's running r2, 0, 1), snr by RMS(g_hat) / RMS(target)
                         "dni_lr1e-3": [*PLAIN, "agents.speaker.optimizer.lr=1e-3"],
                         "dni_r2_lr1e-3": [*PLAIN, "agents.speaker.optimizer.lr=1e-3", "interface.sg.sender_step=r2"],
                         "dni_r2": [*PLAIN, "agents.speaker.optimizer.lr=1e-4", "interface.sg.sender_step=r2"],
                         "dni_snr_lr1e-3": [*PLAIN, "agents.speaker.optimizer.lr=1e-3", "interface.sg.sender_step=snr"],
                         # the same with M's lr kept at 1e-4 (M otherwise takes the speaker's settings, so the
                         # lr1e-3 rows above also made M 10x faster)
                         "dni_lr1e-3_m1e-4": [*PLAIN, "agents.speaker.optimizer.lr=1e-3", M_LR],
                         "dni_snr_lr1e-3_m1e-4": [*PLAIN, "agents.speaker.optimizer.lr=1e-3", M_LR,
                                                  "interface.sg.sender_step=snr"]},
    "relay": COMM,
}
# relay_v0 (corporation/envs/toy.py): the listener must name the speaker's goal, one of 5, and hears it only
# through the edge (its observation keeps the time, not the env's copy of the message). Chance: 1 per episode.
RELAY = {
    "name": "relay", "seed": 0, "device": "cpu",
    "task": {"kind": "pettingzoo", "env": "corporation.envs.toy", "env_kwargs": {"k": 5, "max_cycles": 5},
             "num_envs": 16, "actions": {"speaker": "direct"}, "observe": {"listener": [5, 6]},
             "entropy_coef": 0.01, "test_episodes": 20},
    "interface": {"kind": "dni", "sg": {"hidden": 0}, "context": "task.speaker_obs"},
    "agents": {
        "speaker": {"model": {"kind": "mlp", "hidden": [16], "activation": "tanh", "out_activation": False},
                    "optimizer": {"lr": 1.0e-3}},
        "listener": {"model": {"kind": "actor_critic", "hidden": [64]}, "optimizer": {"lr": 1.0e-3},
                     "update": {"unroll": 6}},
    },
    "edges": [{"src": "task.speaker_obs", "dst": "speaker"}, {"src": "speaker", "dst": "task.speaker_act"},
              {"src": "speaker", "dst": "listener"}, {"src": "task.listener_obs", "dst": "listener"},
              {"src": "listener", "dst": "task.listener_act"}],
    "train": {"ticks": 6000, "eval_every": 1000, "log_every": 250},
}


def scenario_file(exp: str) -> Path:
    if exp == "relay":
        import yaml

        RUNS.mkdir(parents=True, exist_ok=True)
        path = RUNS / "relay.yaml"
        path.write_text(yaml.safe_dump(RELAY, sort_keys=False))
        return path
    return ROOT / "scenarios" / f"{exp}.yaml"


# Scripted listeners, 200 episodes each (``python experiments/rl.py baselines``), drawn as reference lines.
REFERENCES = {"speaker_listener": {"scripted: stand still": -35.9, "scripted: landmarks' centroid": -16.5,
                                   "scripted: goal (perfect message)": -6.9}}


# "solved" bars for the first-crossing column (speaker-listener: about halfway from the centroid level, -16.5,
# to the perfect-message level, -6.9)
THRESHOLDS = {"cartpole": 450.0, "relay": 4.5, "speaker_listener": -12.0}


def run_one(exp: str, variant: str, seed: int) -> str:
    out = RUNS / f"{exp}-{variant}-{seed}"
    try:
        run, reused = cached_run(Cell(out, file=scenario_file(exp), sets=[f"seed={seed}", *EXPERIMENTS[exp][variant]]))
    except CorporationError as e:
        return f"{out.name}: FAILED {e}"
    if reused:
        return f"{out.name}: done already"
    return f"{out.name}: {run.summary['wall_s']:.0f} s, final {run.final.get('train/episode_return')}"


def load(exp: str, variant: str, seed: int) -> tuple[dict, list[dict]] | None:
    out = RUNS / f"{exp}-{variant}-{seed}"
    if not finished(out):
        return None
    run = read_run(out)
    return run.summary, run.records


def curve(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["train/env_steps"], r[key]) for r in rows if r.get(key) is not None and "train/env_steps" in r]
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def report(seeds: list[int]) -> None:
    """Per experiment: a table per seed (stdout), and docs/results/rl_<exp>.png: train and test return against
    environment steps, one curve per variant (mean over seeds, band: lowest to highest seed)."""
    DOCS.mkdir(parents=True, exist_ok=True)
    for exp, variants in EXPERIMENTS.items():
        print(f"## {exp}")
        bar = THRESHOLDS.get(exp)
        print("| variant | seed | wall s | final train return (last 100 ep.) | final test return | "
              f"first env step with train >= {bar} |")
        print("|---|---|---|---|---|---|")
        groups = []
        for variant in variants:
            runs = [(s, load(exp, variant, s)) for s in seeds]
            runs = [(s, r) for s, r in runs if r is not None]
            if not runs:
                continue
            groups.append(Group(variant, [read_run(RUNS / f"{exp}-{variant}-{s}") for s, _ in runs]))
            for seed, (summary, rows) in runs:
                x, y = curve(rows, "train/episode_return")
                hit = int(x[y >= bar][0]) if bar is not None and (y >= bar).any() else None
                f = summary["final"]
                print(f"| {variant} | {seed} | {summary['wall_s']:.0f} | {f.get('train/episode_return', float('nan')):.1f} "
                      f"| {f.get('test/episode_return', float('nan')):.1f} | {hit if hit is not None else '-'} |")
        if groups:
            refs = REFERENCES.get(exp)  # keep the early dips from squashing the curves; the table has them
            plot_curves([("training (last 100 episodes, sampled actions)", "train/episode_return", groups),
                         ("test (greedy, fixed seeds)", "test/episode_return", groups)],
                        DOCS / f"rl_{exp}.png", x="train/env_steps", references=refs,
                        ylim=(min(refs.values()) - 10, None) if refs else None,
                        title=f"{exp}: seeds {seeds}; mean over seeds, band: lowest to highest seed")
        summary_table(exp, variants, seeds)


def summary_table(exp: str, variants: dict, seeds: list[int]) -> None:
    """Mean +- std over seeds of the final train return, of the mean train return over the run's last 20%, and
    of the mean over the whole run (the area under the learning curve: how early the return came)."""
    print(f"\n| {exp} variant | seeds | final train return mean +- std | last-20% train return mean +- std "
          "| whole-run mean train return +- std |")
    print("|---|---|---|---|---|")
    for variant in variants:
        finals, lates, alls = [], [], []
        for s in seeds:
            r = load(exp, variant, s)
            if r is None:
                continue
            x, y = curve(r[1], "train/episode_return")
            finals.append(y[-1])
            lates.append(y[x >= 0.8 * x[-1]].mean())
            alls.append(y.mean())
        if finals:
            print(f"| {variant} | {len(finals)} | {np.mean(finals):.1f} +- {np.std(finals):.1f} "
                  f"| {np.mean(lates):.1f} +- {np.std(lates):.1f} | {np.mean(alls):.1f} +- {np.std(alls):.1f} |")
    print()


def baselines(episodes: int = 200) -> None:
    """Scripted listeners on MPE speaker-listener (continuous actions), to read the learned returns against:
    standing still, uniform random actions, heading for the landmarks' centroid (the best use of no message)
    and heading for the goal (a perfect message). Episodes seeded 0..episodes-1."""
    from mpe2 import simple_speaker_listener_v4 as sl

    def push(d: np.ndarray) -> np.ndarray:  # mpe2 continuous: u_x = a[2] - a[1], u_y = a[4] - a[3]
        return np.clip(3.0 * np.array([0.0, max(0, -d[0]), max(0, d[0]), max(0, -d[1]), max(0, d[1])]), 0, 1)

    rng = np.random.default_rng(0)
    policies = {
        "still": lambda o, w: np.zeros(5),
        "random": lambda o, w: rng.random(5),
        "centroid": lambda o, w: push(o[2:8].reshape(3, 2).mean(0) - 0.5 * o[0:2]),
        "goal (oracle)": lambda o, w: push(w.agents[0].goal_b.state.p_pos - w.agents[1].state.p_pos
                                           - 0.5 * w.agents[1].state.p_vel),
    }
    for name, policy in policies.items():
        totals = []
        for ep in range(episodes):
            env = sl.parallel_env(continuous_actions=True)
            obs, _ = env.reset(seed=ep)
            total = 0.0
            while env.agents:
                act = {"speaker_0": np.zeros(3, np.float32),
                       "listener_0": policy(obs["listener_0"], env.unwrapped.world).astype(np.float32)}
                obs, rew, _, _, _ = env.step(act)
                total += rew["listener_0"]
            totals.append(total)
        print(f"| {name} | {np.mean(totals):.1f} +- {np.std(totals) / np.sqrt(episodes):.1f} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["run", "report", "baselines"])
    p.add_argument("experiment", nargs="?", choices=list(EXPERIMENTS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+")
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args()
    if a.command == "baselines":
        baselines()
        return
    if a.command == "report":
        report(a.seeds)
        return
    if a.experiment is None:
        p.error("run needs an experiment")
    variants = a.variants or list(EXPERIMENTS[a.experiment])
    jobs = [(a.experiment, v, s) for s in a.seeds for v in variants]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(a.jobs) as pool:
        for line in pool.map(lambda j: run_one(*j), jobs):
            print(line, flush=True)


if __name__ == "__main__":
    main()
