"""The distributed engine (torch.distributed, gloo, 2 local processes): lockstep metrics equal the local
engine's, placement rules are validation errors, a dying worker ends the run with one line naming it."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from corporation import Engine, ScenarioError, load
from corporation.distributed import plan
from corporation.launch import launch

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["device=cpu", "train.ticks=40", "train.eval_every=20", "train.progress=false"]


def _keep_lines(engine, path: str) -> None:
    lines: list[dict] = []
    engine.run(on_log=lines.append)
    Path(path).write_text(json.dumps(lines))


def _local_lines(scenario) -> list[dict]:
    """The local engine's records, with one intra-op thread as each worker runs (the same reductions)."""
    local: list[dict] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Engine(scenario).run(on_log=local.append)
    finally:
        torch.set_num_threads(threads)
    return json.loads(json.dumps(local))


@pytest.mark.parametrize("name, extra", [("corporation", []), ("ff_digits", []),
                                         ("corporation", ["edges.1.latency=3", "edges.2.latency=3"])])
def test_lockstep_on_two_workers_gives_the_local_engines_metrics(tmp_path, name, extra):
    """Latency 3 on the cross-worker edges lets each worker run 2 ticks ahead (packets received later)."""
    scenario = load(ROOT / "scenarios" / f"{name}.yaml", [*SHORT, *extra])
    local = _local_lines(scenario)
    out = tmp_path / "lines.json"
    placement = launch(scenario, 2, functools.partial(_keep_lines, path=str(out)))
    # corporation's latency-1 chain is split across the workers; ff_digits' latency-0 chain cannot be
    assert len(set(placement.worker.values())) == (2 if name == "corporation" else 1)
    got = json.loads(out.read_text())
    assert [r["tick"] for r in got] == [r["tick"] for r in local] == [20, 40]
    for want, have in zip(local, got):
        assert set(want) <= set(have)
        for k, v in want.items():
            assert have[k] == pytest.approx(v, rel=1e-6, abs=1e-7), k
        assert {k for k in have if k.startswith("time/")} == {f"time/worker{r}/{w}" for r in (0, 1)
                                                             for w in ("busy", "exchange", "tick")}


def test_placement_rules_are_validation_errors():
    with pytest.raises(ScenarioError, match="needs latency >= 1"):
        plan(load(ROOT / "scenarios" / "ff_digits.yaml", [*SHORT, "engine.kind=distributed", "engine.workers=2",
                                                          "engine.placement={l1: 1, l2: 0}"]), 2)
    with pytest.raises(ScenarioError, match="joined by backprop"):
        plan(load(ROOT / "scenarios" / "ff_digits.yaml",
                  [*SHORT, "edges.1.interface.kind=backprop", "edges.1.latency=0", "engine.kind=distributed",
                   "engine.workers=2", "engine.placement={l1: 0, l2: 1}"]), 2)
    with pytest.raises(ScenarioError, match=r"environment and runs on one worker: the agents bound to it "
                                            r"\(control: 1, perception: 0\)"):
        plan(load(ROOT / "scenarios" / "cartpole.yaml", ["edges.1.latency=1", "engine.kind=distributed",
                                                         "engine.workers=2",
                                                         "engine.placement={perception: 0, control: 1}"]), 2)
    with pytest.raises(ScenarioError, match="engine.placement.zz"):
        plan(load(ROOT / "scenarios" / "corporation.yaml", [*SHORT, "engine.kind=distributed",
                                                            "engine.workers=2", "engine.placement={zz: 1}"]), 2)


def test_free_mode_trains_and_reports_staleness_in_ticks_and_seconds(tmp_path):
    scenario = load(ROOT / "scenarios" / "corporation.yaml",
                    ["device=cpu", "train.ticks=150", "train.eval_every=150", "train.progress=false",
                     "engine.kind=distributed", "engine.workers=2", "engine.mode=free"])
    out = tmp_path / "lines.json"
    launch(scenario, 2, functools.partial(_keep_lines, path=str(out)))
    (last,) = json.loads(out.read_text())
    assert last["test/accuracy"] > 0.5, "digits, 10 classes: chance is 0.1"
    assert last["sg/l1-l2/staleness"] >= 1 and "time/worker0/message_age_s" in last
    assert last["time/worker0/tick"] == last["time/worker1/tick"] == 150


def test_cli_workers_and_torchrun_standalone_write_one_folder_with_the_same_metrics(tmp_path):
    common = ["--set", "device=cpu", "--set", "train.ticks=20", "--set", "train.eval_every=20", "--quiet"]
    file = str(ROOT / "scenarios" / "corporation.yaml")
    runs = {}
    for how, cmd in (("spawn", ["-m", "corporation", "run", file, "--workers", "2"]),
                     ("torchrun", ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                                   "-m", "corporation", "run", file])):
        out = tmp_path / how
        proc = subprocess.run([sys.executable, *cmd, "--out", str(out), *common], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (line,) = (out / "metrics.jsonl").read_text().splitlines()
        runs[how] = json.loads(line)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["ticks"] == 20 and "time/worker1/busy" in summary["final"] and "test/accuracy" in line
    assert {k: v for k, v in runs["spawn"].items() if not k.startswith("time/")} == \
        {k: v for k, v in runs["torchrun"].items() if not k.startswith("time/")}


def test_distributed_resume_continues_exactly(tmp_path):
    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "corporation", *args, "--quiet"], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]

    file = str(ROOT / "scenarios" / "corporation.yaml")
    common = ["--set", "device=cpu", "--set", "train.eval_every=20"]
    cli("run", file, "--workers", "2", "--out", str(tmp_path / "a"), *common, "--set", "train.ticks=40")
    cli("resume", str(tmp_path / "a"), "--set", "train.ticks=60")
    got = [{k: v for k, v in json.loads(x).items() if not k.startswith("time/")}
           for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["tick"] for r in got] == [20, 40, 60]
    want = _local_lines(load(ROOT / "scenarios" / "corporation.yaml",
                             ["device=cpu", "train.eval_every=20", "train.ticks=60", "train.progress=false"]))
    assert got == want, "the uninterrupted run (lockstep = the local engine's lines)"


def test_a_dying_worker_leaves_the_run_folder_whole(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", ("import sys; sys.path.insert(0, sys.argv[1]); import plugins.dying; "
                           "from corporation.cli import main; sys.exit(main(sys.argv[2:]))"), str(ROOT / "tests"),
                           "run", str(ROOT / "scenarios" / "corporation.yaml"), "--workers", "2", "--out", str(out),
                           "--set", "device=cpu", "--set", "task.kind=dying_digits", "--set", "task.die_at=30",
                           "--set", "train.eval_every=20", "--set", "train.ticks=400", "--quiet"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    err = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and "worker 1 died" in err[0] and "after tick 20" in err[0], proc.stderr[-1500:]
    assert (out / "checkpoint.pt").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert "worker 1 died" in json.loads((out / "summary.json").read_text())["error"]


def test_show_prints_the_placement():
    from corporation.show import describe

    text = describe(load(ROOT / "scenarios" / "hier_rnn.yaml", ["edges.1.latency=1", "engine.kind=distributed",
                                                                "engine.workers=2", "engine.placement={B: 1}"]))
    assert "placement (2 workers, lockstep" in text and "worker 0: A" in text and "worker 1: B" in text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_workers_on_the_gpu_give_the_local_gpu_runs_metrics(tmp_path):
    scenario = load(ROOT / "scenarios" / "corporation.yaml", [*SHORT, "device=cuda"])
    want = _local_lines(scenario)
    out = tmp_path / "lines.json"
    launch(scenario, 2, functools.partial(_keep_lines, path=str(out)))
    got = json.loads(out.read_text())
    for a, b in zip(want, got):
        for k, v in a.items():
            assert b[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k


def _relay_cartpole() -> dict:
    """CartPole with an agent between perception and control that touches no task port (so it may run on
    another worker); ``sense`` reads the observation and ``act`` acts: both are bound to the environment.
    (Names in execution order: a latency-1 edge whose sender acts later in a tick would be a back edge,
    never blocking, and its receiver would need the task's batch ids.)"""
    import yaml

    raw = yaml.safe_load((ROOT / "scenarios" / "cartpole.yaml").read_text())
    adam = raw["agents"]["perception"]["optimizer"]
    raw["agents"] = {"a_sense": raw["agents"]["perception"], "c_act": raw["agents"]["control"],
                     "b_relay": {"model": {"kind": "mlp", "out": 32, "activation": "tanh"}, "optimizer": adam}}
    raw["edges"] = [{"src": "task.obs", "dst": "a_sense"}, {"src": "a_sense", "dst": "b_relay", "latency": 1},
                    {"src": "b_relay", "dst": "c_act", "latency": 1}, {"src": "c_act", "dst": "task.act"}]
    raw["task"].update(num_envs=4, test_episodes=2)
    raw["train"] = {"ticks": 60, "eval_every": 30, "log_every": 20, "progress": False}
    return raw


def test_an_environment_runs_on_the_worker_of_its_agents_and_matches_the_local_engine(tmp_path):
    from corporation import from_dict

    raw = _relay_cartpole()
    inferred = plan(from_dict({**raw, "engine": {"kind": "distributed", "workers": 2}}), 2)
    assert inferred.worker["a_sense"] == inferred.worker["c_act"] != inferred.worker["b_relay"]
    scenario = from_dict({**raw, "engine": {"kind": "distributed", "workers": 2,
                                            "placement": {"b_relay": 0, "a_sense": 1, "c_act": 1}}})
    local = _local_lines(from_dict(raw))
    out = tmp_path / "lines.json"
    launch(scenario, 2, functools.partial(_keep_lines, path=str(out)))
    got = json.loads(out.read_text())
    assert [r["tick"] for r in got] == [r["tick"] for r in local] == [20, 30, 40, 60]
    assert local[-1]["train/env_steps"] > 0 and "test/episode_return" in local[-1]
    for want, have in zip(local, got):
        for k, v in want.items():
            assert have[k] == pytest.approx(v, rel=1e-6, abs=1e-7), k


def test_the_backend_is_nccl_only_when_every_worker_drives_a_gpu():
    from corporation.distributed import backend

    assert backend(["cuda:0", "cuda:1"]) == "cpu:gloo,cuda:nccl"
    assert backend(["cuda:0", None]) == "gloo"
    assert backend(["cpu", "cpu"]) == backend([None, None]) == "gloo"
