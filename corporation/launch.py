"""Launching a distributed run: K local worker processes (``spawn``) or torchrun's, and the run folder.

``python -m corporation run FILE --workers K`` starts K local processes (:func:`launch`);
``torchrun --nproc-per-node K -m corporation run FILE`` starts them itself (the env:// rendezvous). A worker
that fails or dies ends the run: the launcher stops the others and names the worker (see :func:`launch`);
the run folder keeps its metrics and last checkpoint (:func:`run_distributed`). The engine each worker runs
is :class:`corporation.distributed.DistributedEngine`.
"""
from __future__ import annotations

import datetime
import functools
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .distributed import DEFAULT_TIMEOUT, DistributedEngine, backend, plan, worker_device
from .errors import CorporationError
from .placement import Placement
from .spec import Scenario


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def init_worker(rank: int, world: int, init_method: str, timeout: float = DEFAULT_TIMEOUT,
                device: str | None = None, kind: str = "gloo") -> None:
    """Join the process group (``kind``: :func:`backend`); with NCCL, this worker's GPU is ``device``."""
    if "nccl" in kind:
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(kind, init_method=init_method, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout))


def _worker(rank: int, world: int, init_method: str, scenario: Scenario, placement: Placement, threads: int,
            lead: Any, timeout: float, follow: Any = None, restore: str | None = None) -> None:
    torch.set_num_threads(threads)
    device = worker_device(scenario, rank)
    # every worker drives a GPU: the workers of a machine are alike, so each rank's own answer is everyone's
    kind = backend([device] * world)
    init_worker(rank, world, init_method, timeout, device, kind)
    try:
        if restore is not None:
            ckpt = torch.load(restore, map_location="cpu", weights_only=False)  # our own pickle
            engine = DistributedEngine.restore_worker(ckpt, scenario, rank)
        else:
            engine = DistributedEngine(scenario, placement, rank, device=device, checkpoints=True,
                                       nccl="nccl" in kind)
        if rank == 0 and lead is not None:
            lead(engine)
        elif rank != 0 and follow is not None:
            follow(engine)
        else:  # the same schedule as worker 0's, checkpoints included (collective; worker 0 writes them)
            engine.run(ticks=scenario.train.ticks - engine.tick)
        engine.transport.close(engine.tick)
        dist.barrier()  # no worker tears its connections down while a peer still drains its own
    finally:
        dist.destroy_process_group()


def _spawned_worker(rank: int, *args: Any) -> None:
    """``_worker`` in a process of :func:`launch`, which leaves without the interpreter's shutdown once its run is
    complete: there, gloo's threads were sometimes destroyed still joinable (SIGABRT, "terminate called without
    an active exception", after the last tick: a few % of two-worker test runs). A failing worker raises as
    before; everything a complete run writes is closed by then."""
    _worker(rank, *args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(scenario: Scenario, workers: int, lead: Any = None, threads: int = 1,
           timeout: float = DEFAULT_TIMEOUT, follow: Any = None, restore: str | None = None) -> Placement:
    """Run ``scenario`` on ``workers`` local processes (``spawn``), one intra-op thread each by default.
    ``lead(engine)`` runs on worker 0 (e.g. the runner's training loop that writes the run folder); the
    other workers run ``follow(engine)`` (default ``engine.run()``: the same schedule of ticks, logs and
    evaluations, which are collective). A worker that raises or dies ends the run: the others are stopped at once and a
    :class:`CorporationError` names the worker (its exit code; a lost peer otherwise times out after
    ``timeout`` seconds)."""
    placement = plan(scenario, workers)
    init = f"tcp://127.0.0.1:{free_port()}"
    args = (workers, init, scenario, placement, threads, lead, timeout, follow, restore)
    ctx = mp.start_processes(_spawned_worker, args=args,
                             nprocs=workers, join=False, start_method="spawn")
    try:
        while not ctx.join(timeout=0.5):
            pass
    except mp.ProcessRaisedException as e:
        _stop(ctx)
        if os.environ.get("CORPORATION_TRACEBACK"):
            print(str(e), file=sys.stderr)
        last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CorporationError(f"worker {e.error_index} failed: {last}") from None
    except mp.ProcessExitedException as e:
        _stop(ctx)
        raise CorporationError(f"worker {e.error_index} died (exit code {e.exit_code}); the run stopped") from None
    return placement


def _stop(ctx: Any) -> None:
    for p in ctx.processes:
        if p.is_alive():
            p.terminate()
    for p in ctx.processes:
        p.join(5)
        if p.is_alive():
            p.kill()


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (its env:// rendezvous variables are set)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def torchrun_worker(scenario: Scenario, lead: Any = None, timeout: float = DEFAULT_TIMEOUT) -> None:
    """This process's share of a torchrun launch (rank and world from the environment)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    placement = plan(scenario, world)
    _worker(rank, world, "env://", scenario, placement, int(os.environ.get("OMP_NUM_THREADS", "1")),
            lead, timeout)
    if rank != 0:
        sys.exit(0)


def _lead(engine: DistributedEngine, path: str, progress: bool | None, quiet: bool, overwrite: bool) -> None:
    """Worker 0 of a launched run: the runner's training loop, writing the run folder."""
    from .runfolder import open_folder
    from .runner import _train
    from .scenario import dump

    with open_folder(Path(path), overwrite=overwrite) as folder:
        folder.write_text("scenario.yaml", dump(engine.scenario))
        _train(engine, folder, folder.metrics(), progress, quiet, {})


def run_distributed(scenario: Scenario, out: Path | None = None, progress: bool | None = None,
                    quiet: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """``run`` for ``engine.kind: distributed``: one run folder written by worker 0; returns the summary."""
    from .runfolder import check_out, claim_default

    out = Path(out) if out is not None else None
    plan(scenario, scenario.engine.workers)  # placement errors before anything is created
    if under_torchrun():  # every process runs this; worker 0 alone claims and writes the run folder
        lead = None
        if int(os.environ["RANK"]) == 0:
            if out is not None:
                check_out(out, overwrite)
            path = out if out is not None else claim_default(scenario.name, scenario.seed)
            if not quiet:
                print(f"run folder: {path} ({scenario.engine.workers} workers, torchrun)", file=sys.stderr)
            lead = functools.partial(_lead, path=str(path), progress=progress, quiet=quiet, overwrite=overwrite)
        torchrun_worker(scenario, lead)  # workers other than 0 exit when done
    else:
        if out is not None:
            check_out(out, overwrite)
        path = out if out is not None else claim_default(scenario.name, scenario.seed)
        if not quiet:
            print(f"run folder: {path} ({scenario.engine.workers} workers)", file=sys.stderr)
        try:
            launch(scenario, scenario.engine.workers, functools.partial(_lead, path=str(path), progress=progress,
                                                                        quiet=quiet, overwrite=overwrite))
        except CorporationError as e:
            raise CorporationError(_after_failure(path, scenario, str(e))) from None
    return json.loads((path / "summary.json").read_text())


def _after_failure(path: Path, scenario: Scenario, what: str) -> str:
    """A failed launch: the run folder keeps its metrics and last checkpoint; a summary that worker 0 could
    not write is written here. Returns the one-line message, with the last logged tick."""
    last: dict[str, Any] = {}
    try:
        lines = (path / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        pass
    tick = last.get("tick", 0)
    summary_path = path / "summary.json"
    try:  # worker 0, stopped by the launcher, may have written one (as interrupted): it records the failure
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        summary = {"name": scenario.name, "seed": scenario.seed, "ticks": tick,
                   "final": {k: v for k, v in last.items() if k != "tick"}}
    summary.pop("interrupted", None)
    summary["error"] = what
    try:
        tmp = path / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(summary_path)
    except OSError:
        pass
    return f"{what}, after tick {tick} (the last logged); {path} keeps its metrics and last checkpoint"


def _resume_lead(engine: DistributedEngine, folder: str, progress: bool | None, quiet: bool) -> None:
    """Worker 0 of a resumed run: the runner's loop, appending to the run folder."""
    from .runfolder import open_folder
    from .runner import _read_summary, _train
    from .scenario import dump

    path = Path(folder)
    with open_folder(path, create=False) as run:
        before = _read_summary(path)
        if not quiet:
            print(f"resuming {path} at tick {engine.tick} ({engine.world} workers)", file=sys.stderr)
        run.write_text("scenario.yaml", dump(engine.scenario))
        _train(engine, run, run.metrics(keep_until=engine.tick), progress, quiet, before)


def resume_distributed(folder: Path, scenario: Scenario, progress: bool | None = None,
                       quiet: bool = False) -> dict[str, Any]:
    """``resume`` of a distributed run: every worker restores its part of ``folder/checkpoint.pt``."""
    launch(scenario, scenario.engine.workers, functools.partial(_resume_lead, folder=str(folder),
                                                                progress=progress, quiet=quiet),
           restore=str(folder / "checkpoint.pt"))
    return json.loads((folder / "summary.json").read_text())
