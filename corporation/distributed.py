"""The distributed engine: the components of one scenario on K worker processes joined by torch.distributed.

Every worker builds the whole scenario from the same seed (the same generators, the same draws, so every
agent's initial parameters are identical everywhere) and rebuilds the task as a data stream: inputs, labels
and contexts never travel. An environment (a ``paced`` task) steps on one worker only: the one holding the
agents bound to it (:func:`corporation.placement.task_bound`); elsewhere its copy emits once and then waits
for actions that never come, so it is never stepped (it is still built there: worker 0 evaluates on fresh
environments). Each worker then runs only its own components (:mod:`corporation.placement`);
messages and targets on cross-worker edges travel through :class:`~corporation.p2p.P2PTransport`.

``lockstep`` mode: each tick every worker does its agents' work, then exchanges that tick's cross-worker
items with every peer. A cross-worker edge has latency >= 1, so what an agent reads at tick t was sent
before t and has arrived: the workers compute each tick at the same time, and the metrics equal the local
engine's (invariant 6: to float tolerance; in practice identical on one machine).

Metrics: worker 0 gathers every worker's metrics at each log (the task's from the workers whose agents feed
its loss ports: each reports the ports it scores; a task metric pooled over ports on several workers, e.g.
one ``train/loss`` for two ports, is the lowest such worker's);
evaluation gathers the agents' parameters on worker 0, which composes them. Worker 0 writes the run folder.

Launching the workers and the run folder of a distributed run: :mod:`corporation.launch`.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import torch
import torch.distributed as dist

from .engine import Engine
from .errors import ScenarioError
from .graph import build_graph
from .p2p import FreeP2PTransport, P2PTransport
from .placement import Placement, infer, place
from .registry import TASKS
from .spec import Scenario, is_port
from .wiring import agent_device, build_agent, resolve_device

DEFAULT_TIMEOUT = 60.0  # seconds a worker waits for a peer before the run is declared failed


def check_distributable(scenario: Scenario) -> None:
    """What the distributed engine cannot run yet, as one-line errors naming the key."""
    factory = TASKS.get(scenario.task.kind).factory
    if getattr(factory, "adaptive", False):
        raise ScenarioError(f"task '{scenario.task.kind}' adapts its stream to the scores (a curriculum), so it "
                            "cannot be rebuilt on every worker; run it with the local engine", "engine.kind")


def plan(scenario: Scenario, workers: int) -> Placement:
    """The placement of ``scenario`` on ``workers`` workers (explicit ``engine.placement`` wins, the rest is
    inferred by cost), checked against the placement rules."""
    check_distributable(scenario)
    graph = build_graph(scenario)
    cpu = torch.device("cpu")
    sizes = {}
    for name in graph.order:  # parameter counts for the cost estimate (the same models the workers build)
        agent = build_agent(scenario, graph, name, cpu, 2)
        sizes[name] = sum(p.numel() for m in (agent.body, agent.heads) for p in m.parameters())
    chosen = infer(scenario, graph, workers, sizes, scenario.engine.placement)
    return place(scenario, graph, workers, chosen)


class DistributedEngine(Engine):
    """The engine of one worker (rank) of a distributed run (module doc)."""

    def __init__(self, scenario: Scenario, placement: Placement, rank: int, device: str | None = None,
                 checkpoints: bool = False, nccl: bool = False):
        g = build_graph(scenario)
        world = placement.workers
        worker = placement.worker
        edges = [e for e in scenario.edges if not is_port(e.src) and not is_port(e.dst)]
        remote: dict[tuple[Any, str], int] = {}
        for e in edges:
            src, dst = worker[e.src], worker[e.dst]
            if src == rank and dst != rank:
                remote[("message", e.key)] = dst
            if dst == rank and src != rank:
                remote[("target", e.key)] = src
        devices = {}
        default = resolve_device(device or scenario.device)
        for e in edges:  # where the receiving halves keep what arrives: their agent's device
            if worker[e.dst] == rank:
                devices[("message", e.key)] = agent_device(scenario, e.dst, default)
            if worker[e.src] == rank:
                devices[("target", e.key)] = agent_device(scenario, e.src, default)
        capacity = _packet_bytes(scenario, g, worker)
        del g
        free = scenario.engine.mode == "free"
        if free:  # a cross-worker edge is read as hold: the newest message that has arrived
            crossing = {e.key for e in edges if worker[e.src] != worker[e.dst]}
            scenario = dataclasses.replace(scenario, edges=[dataclasses.replace(e, hold=True) if e.key in crossing
                                                            else e for e in scenario.edges])
        channels = sorted(e.key for e in edges)
        transport = (FreeP2PTransport(rank, world, channels, remote, devices, scenario.engine.max_drift) if free
                     else P2PTransport(rank, world, channels, remote, devices))
        transport.set_capacity(capacity)
        if nccl and not free:  # every worker drives a GPU (backend())
            transport.use_nccl(resolve_device(device or scenario.device))
        ahead = 0 if free else _run_ahead(scenario, worker)
        if ahead:
            transport.set_ahead(ahead)
        self.rank, self.world = rank, world  # before the engine's first snapshot (taken in its constructor)
        self.timing = {"busy": 0.0}
        super().__init__(scenario, device=device, placement=placement, worker=rank, transport=transport,
                         checkpoints=checkpoints and not free)
        if free:
            self.cannot_checkpoint = "free-mode distributed runs write no checkpoints (what is in flight is lost)"
        elif ahead:
            self.cannot_checkpoint = (f"workers run {ahead} tick(s) ahead of each other (cross-worker latency >= "
                                      f"{ahead + 1}), so packets are always in flight: no checkpoints")

    def run(self, ticks: int | None = None, on_log: Any = None, on_tick: Any = None, on_checkpoint: Any = None,
            stop: Any = None) -> dict[str, Any]:
        """As :meth:`Engine.run`; checkpoints are gathered at every evaluation on every worker whether or not
        this worker keeps them (a collective: every worker must make the same calls)."""
        return super().run(ticks, on_log, on_tick, on_checkpoint or (lambda ckpt: None), stop)

    # ----- checkpoints: every worker snapshots at the same tick; worker 0 keeps them all -------------
    def _agree(self, ok: bool) -> bool:
        """Whether ``ok`` holds on every worker (a collective)."""
        flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _take_snapshot(self) -> bool:
        """A snapshot only when every worker is at rest and every worker's pickling succeeds (so all
        journals replay the same calls together)."""
        if not self._agree(self.at_rest() and not self.cannot_checkpoint):
            if not self._agree(not self.cannot_checkpoint):
                self.cannot_checkpoint = self.cannot_checkpoint or "another worker cannot be checkpointed"
            return False
        before = (self._snapshot, self._journal, self._snapshot_fresh)
        took = super()._take_snapshot()
        if self._agree(took):
            return True
        if took:  # another worker failed: keep the previous snapshot and journal here too
            self._snapshot, self._journal, self._snapshot_fresh = before
        if not self._agree(not self.cannot_checkpoint):
            self.cannot_checkpoint = self.cannot_checkpoint or "another worker cannot be checkpointed"
        return False

    def checkpoint(self) -> dict[str, Any]:
        """Every worker's checkpoint, gathered on worker 0 (a collective; the others get ``{}``)."""
        mine = super().checkpoint()
        gathered: list[Any] = [None] * self.world if self.rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        if self.rank != 0:
            return {}
        return {**gathered[0], "distributed": {"workers": self.world, "placement": dict(self.placement.worker)},
                "parts": gathered}

    @classmethod
    def restore_worker(cls, ckpt: dict[str, Any], scenario: Scenario, rank: int) -> DistributedEngine:
        """This worker's engine from a distributed checkpoint (its part's snapshot, then its journal replayed
        together with the other workers')."""
        from . import checkpoint as checkpoint_mod
        from .seeding import generator

        part = ckpt["parts"][rank]
        device = resolve_device(scenario.device)
        task = TASKS.get(scenario.task.kind).factory(scenario.task, device, generator(scenario.seed, "task"))
        engine: DistributedEngine = checkpoint_mod.loads(part["snapshot"], checkpoint_mod.static_objects(task))
        engine.scenario = scenario
        for call in part["journal"]:
            getattr(engine, f"_{call}")()
        engine._snapshot, engine._journal, engine._snapshot_fresh = part["snapshot"], list(part["journal"]), False
        return engine

    def _step(self) -> None:
        started = time.perf_counter()
        super()._step()
        self.timing["busy"] += time.perf_counter() - started

    def _collect(self) -> dict[str, float]:
        own = super()._collect()
        exchange = self.transport.exchange_seconds
        own[f"time/worker{self.rank}/busy"] = self.timing["busy"] - exchange
        own[f"time/worker{self.rank}/exchange"] = exchange
        own[f"time/worker{self.rank}/tick"] = float(self.tick)
        ages = getattr(self.transport, "ages", None)
        if ages:  # free mode: how old what arrived was, in seconds (in ticks: sg/*/staleness)
            own[f"time/worker{self.rank}/message_age_s"] = sum(ages) / len(ages)
            ages.clear()
        gathered: list[Any] = [None] * self.world if self.rank == 0 else None
        dist.gather_object(own, gathered, dst=0)
        if self.rank != 0:
            return {}
        out: dict[str, float] = {}
        for part in gathered:  # each worker's own agents and edges; the task's from each scoring worker
            for k, v in part.items():
                out.setdefault(k, v)  # a task metric two scoring workers both report: the lower rank's
        return out

    def _evaluate(self) -> dict[str, float]:
        mine = {n: [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in self.agents[n].modules()]
                for n in self.mine}
        gathered: list[Any] = [None] * self.world if self.rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        if self.rank != 0:
            return {}
        for part in gathered:
            for name, states in part.items():
                if name in self.mine:
                    continue
                for module, state in zip(self.agents[name].modules(), states):
                    module.load_state_dict(state)
        return super()._evaluate()


def _run_ahead(scenario: Scenario, worker: dict[str, int]) -> int:
    """How many ticks lockstep workers may run ahead of each other: the smallest cross-worker latency minus
    one, and at most the smallest back latency (a message is needed at its due tick, a target at the end of
    its due tick)."""
    slack = [min(e.latency - 1, e.back_latency) for e in scenario.edges
             if not is_port(e.src) and not is_port(e.dst) and worker[e.src] != worker[e.dst]]
    return max(0, min(slack, default=0))


def _packet_bytes(scenario: Scenario, graph: Any, worker: dict[str, int]) -> int:
    """The bytes a lockstep tick usually sends from one worker to another (the largest over ordered pairs):
    one message per cross-worker edge and one target back, each a header and a (rows, size) float32 payload
    (a window's targets, sent together at an update, overflow into a second message); rows from the task's ``batch_rows`` (else 256). The same on every
    worker (it is computed from the scenario), as the fixed packet size requires."""
    from .p2p import HEADER

    rows_of = getattr(TASKS.get(scenario.task.kind).factory, "batch_rows", None)
    rows = rows_of(scenario.task)[0] if rows_of is not None else 256
    pair: dict[tuple[int, int], int] = {}
    for e in scenario.edges:
        if is_port(e.src) or is_port(e.dst) or worker[e.src] == worker[e.dst]:
            continue
        item = 8 * HEADER + 4 * rows * graph.msg_size[(e.src, e.dst)] + 8  # + alignment padding
        fwd, back = (worker[e.src], worker[e.dst]), (worker[e.dst], worker[e.src])
        pair[fwd] = pair.get(fwd, 16) + item + rows + 8
        # the receiver's update posts a target for every message of its window at once: room for them all (an
        # overflow costs a second, blocking message; a bigger fixed packet costs less on a local link)
        window = scenario.agents[e.dst].update.unroll
        pair[back] = pair.get(back, 16) + item * window
    return max(pair.values(), default=0)


def worker_device(scenario: Scenario, rank: int) -> str | None:
    """A worker's default device: with ``device: cuda`` or ``auto`` and GPUs present, ``cuda:N`` for its local
    rank (torchrun's LOCAL_RANK, else the rank), so each worker of a machine drives its own GPU; otherwise the
    scenario's (``agents.<name>.device`` still wins for an agent). Messages travel through gloo on the CPU and
    are moved to the receiving agent's device."""
    if scenario.device not in ("auto", "cuda") or not torch.cuda.is_available():
        return None
    local = int(os.environ.get("LOCAL_RANK", rank))
    return f"cuda:{local % torch.cuda.device_count()}"


def backend(devices: list[str | None]) -> str:
    """The process group's backend for workers whose default devices are ``devices`` (one per worker):
    ``cpu:gloo,cuda:nccl`` when every worker drives a GPU (lockstep packets then travel GPU to GPU by NCCL;
    CPU tensors, e.g. the gathered metrics and free mode's packets, by gloo), else ``gloo``."""
    if devices and all(d is not None and torch.device(d).type == "cuda" for d in devices):
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def __getattr__(name: str) -> Any:
    """The launcher's names, moved to :mod:`corporation.launch`, still importable from here."""
    if name in ("launch", "run_distributed", "resume_distributed", "under_torchrun", "torchrun_worker",
                "init_worker", "free_port"):
        from . import launch as module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
