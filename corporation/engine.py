"""The engine: a scheduler that runs components by placement (here: every component on one worker).

It builds each edge as two halves and a transport (DESIGN.md "Architecture"): the sender's
:class:`~corporation.outbox.Outbox` (send schedule, M), the receiver's :class:`~corporation.inbox.Inbox`
(messages, newest, I), and the :class:`~corporation.transport.LocalTransport` between them; the agents
joined by ``backprop`` edges form a :class:`~corporation.component.Component`. The task's inputs and the
contexts an agent needs reach it as messages on port channels; a loss is scored beside the agent feeding
the loss port.

Each tick: the task emits batch ``tick`` (posted on the port channels); due messages are delivered; due
agents act in topological order (ties by name); every component whose members are all due runs ONE
backward pass and its members step, posting targets upstream; finally due targets train the senders' M
(in reverse execution order). Integer ticks, deterministic. Files, argv and progress bars live in the
runner.
"""
from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .agent import Agent
from .clock import fires
from .component import Component, backward_together
from .errors import CorporationError
from .graph import Graph, build_graph
from .guard import Diverged, first_nonfinite
from .inbox import Inbox
from .journal import Journaled
from .messages import Message
from .optim import step_together
from .outbox import Outbox
from .placement import Placement, place
from .registry import TASKS
from .seeding import generator
from .spec import TASK_PREFIX, Scenario, is_port
from .transport import LocalTransport
from .wiring import agent_device, build_agent, resolve_device, wire


@dataclass(frozen=True)
class Event:
    """One entry of an engine trace: at ``tick``, ``kind`` happened at ``where`` (an agent or an edge
    ``src-dst``) about batch ``batch_id``, with ``value``:

    ``emit`` (the task emitted batch ``tick``), ``send`` / ``deliver`` (value: the Message), ``act`` (an
    agent processed ``batch_id``; value: ``{edge: Message read, or None where I or zeros stood in}``),
    ``idle`` (nothing complete), ``update`` / ``skip`` (the agent's component updated; its own step was
    applied / skipped by p_update), ``target`` (a target reached the sender's M; value: the
    GradientMessage, its ``g`` the per-example target), ``output`` (an agent's output reached a loss port
    ``agent-task.port``; value: the output tensor, detached), ``stand_in`` (I stood in for the missing
    message of ``batch_id`` on an edge; value: ``(context, h_hat)``, h_hat what the receiver reads) and
    ``train_i`` (a delivered message trained I; value: ``(context, h, age)``, traced before its ``deliver``)."""

    tick: int
    kind: str
    where: str
    batch_id: int | None
    value: Any = None


class Engine(Journaled):
    """The local scheduler: runs every component in one process (placement: one worker). ``step()``
    advances one tick; ``evaluate()`` scores the composition. ``trace``: a callable receiving an
    :class:`Event` for every send, delivery, act, idle tick, update and target arrival (for tests and
    debugging; ``None`` costs nothing). ``shuffle``: a seed; each tick then runs agents, components and
    target deliveries in a random order (the latency >= 1 independence check of the tests)."""

    def __init__(self, scenario: Scenario, device: str | None = None, checkpoints: bool = False,
                 trace: Callable[[Event], None] | None = None, shuffle: int | None = None,
                 placement: Placement | None = None, worker: int = 0, transport: LocalTransport | None = None):
        self.scenario = scenario
        self.graph: Graph = build_graph(scenario)
        self.device = resolve_device(device or scenario.device)
        self.task = TASKS.get(scenario.task.kind).factory(scenario.task, self.device,
                                                          generator(scenario.seed, "task"))
        self.trace = trace
        # a check, not a mode: every tick runs the agents, the components and the targets in an order drawn
        # from this seed (with latency >= 1 everywhere the results must not change: workers may run at once)
        self._shuffle = random.Random(shuffle) if shuffle is not None else None
        self.transport = transport if transport is not None else LocalTransport()
        self.horizon = 2 + max([e.latency + e.back_latency for e in scenario.edges], default=0)
        if scenario.engine.mode == "free":  # batches are kept while a peer may still be that far behind
            self.horizon += scenario.engine.max_drift
        g = self.graph
        self.agents: dict[str, Agent] = {name: build_agent(scenario, g, name, self.agent_device(name), self.horizon)
                                         for name in g.order}
        w = wire(scenario, g, self.agents, self.transport, self.task, self.device,
                 self._trace if trace is not None else None)
        self._message_channels, self._port_edges, self._target_channels = (w.message_channels, w.port_edges,
                                                                           w.target_channels)
        self._target_outboxes, self._loss_agents, self._edges = w.target_outboxes, w.loss_agents, w.edges
        # what the task posts at every emission: emitted ids and port contexts, to the agents that need them
        self._id_channels = [f"ids>{n}" for n, a in self.agents.items() if a.needs_live_ids()]
        self._context_channels = [(f"context:{p}>{n}", p) for n, a in self.agents.items() for p in a.port_contexts]
        # every worker builds every agent (same generators, same draws); it runs only its own components
        self.placement = placement if placement is not None else place(scenario, g)
        self.worker = worker
        mine = set(self.placement.agents_of(worker))
        self.mine = [n for n in g.order if n in mine]  # this worker's agents, in execution order
        local = mine.__contains__
        self._message_channels = [c for c, e in zip(self._message_channels, [e for e in scenario.edges
                                  if not is_port(e.dst)]) if local(e.dst)]
        self._port_edges = [e for e in self._port_edges if local(e.dst)]
        keep = {o.channel for n in self.mine for o in self.agents[n].outboxes}
        self._target_channels = [c for c in self._target_channels if c in keep]
        self._target_outboxes = [o for o in self._target_outboxes if o.channel in keep]
        self._loss_agents = [n for n in self._loss_agents if local(n)]
        self._id_channels = [c for c in self._id_channels if local(c.split(">", 1)[1])]
        self._context_channels = [(c, p) for c, p in self._context_channels if local(c.split(">", 1)[1])]
        self.components = [Component([self.agents[n] for n in comp], self.transport,
                                     self._trace if trace is not None else None)
                           for comp in g.components if comp[0] in mine]
        self.synthetic_inputs = any(i.si is not None for a in self.agents.values() for i in a.inboxes)
        self.tick = 0
        self._forgot = -(10**9)
        self._held: dict[tuple[str, str], torch.Tensor] = {}
        # checkpoints (corporation.checkpoint): the last snapshot taken at rest and the calls made since
        self._journal: list[str] | None = None
        self._snapshot: bytes | None = None
        self._snapshot_fresh = False  # a snapshot was taken since the last checkpoint
        self.cannot_checkpoint: str | None = None  # why this engine cannot be pickled (then no checkpoints)
        if checkpoints:
            self._journal = []
            self._take_snapshot()

    # ----- construction ------------------------------------------------------------------------------
    def agent_device(self, name: str) -> torch.device:
        """``agents.<name>.device``, else the scenario's device."""
        return agent_device(self.scenario, name, self.device)

    def edge(self, src: str, dst: str) -> tuple[Outbox, Inbox]:
        """The two halves of agent-to-agent edge ``src -> dst``: the sender's outbox (with M as ``.sg``) and
        the receiver's inbox (with I as ``.si``), for reading."""
        outbox = next(o for o in self.agents[src].outboxes if o.dst == dst)
        return outbox, next(i for i in self.agents[dst].inboxes if i.src == src)

    def _trace(self, tick: int, kind: str, where: str, batch_id: int | None, value: Any = None) -> None:
        self.trace(Event(tick, kind, where, batch_id, value))

    # ----- one tick ----------------------------------------------------------------------------------
    def step(self) -> None:
        """Advance one tick (see the module doc)."""
        self._step()
        self._note("step")

    def _step(self) -> None:
        t = self.tick
        transport = self.transport
        transport.begin(t)
        emission = self.task.emit(t)
        if emission is not None:
            if self.trace is not None:
                self._trace(t, "emit", "task", t)
            for channel in self._id_channels:
                transport.post("message", channel, t, t)
            contexts: dict[str, torch.Tensor] = {}  # each port's context once per batch, shared by its readers
            for channel, port in self._context_channels:
                if port not in contexts:
                    contexts[port] = self.task.context(port, t)
                transport.post("message", channel, (t, contexts[port]), t)
            for e in self._port_edges:
                port = e.src[len(TASK_PREFIX):]
                if e.sample and not fires(self.scenario.agents[e.dst].clock, t + e.latency):
                    continue
                msg = Message(t, emission.inputs[port], t, emission.start, emission.end, emission.reset)
                if self.trace is not None:
                    self._trace(t, "send", e.key, t, msg)
                transport.post("message", e.key, msg, t + e.latency)
        transport.poll(t, "message", self._message_channels)
        order, components, targets = self.mine, self.components, self._target_channels
        if self._shuffle is not None:
            order, components, targets = (self._shuffle.sample(x, len(x)) for x in (order, components, targets))
        for name in order:
            agent = self.agents[name]
            if fires(agent.spec.clock, t):
                agent.act(t)
        due = [c for c in components if c.due()]
        if due:
            backward_together(due, t)
        transport.flush(t)  # a distributed transport exchanges this tick's cross-worker items here
        transport.poll(t, "target", targets)
        trained = [(o, loss) for o in self._target_outboxes if o.targets
                   for loss in [o.train()] if loss is not None]
        if trained:  # every M of the tick: one backward (disjoint graphs), one fused optimizer update
            torch.autograd.backward([loss for _, loss in trained])
            step_together([o.sg.optimizer for o, _ in trained])
            for o, _ in trained:
                o.sg.stepped()
        bad = first_nonfinite(self._regression_losses())
        if bad is not None:
            raise Diverged(t, f"non-finite {bad}")
        self._forget()
        self.tick += 1

    def _regression_losses(self) -> list[tuple[str, torch.Tensor]]:
        """The running loss sums of every M, I and Aux head (non-finite as soon as one loss was)."""
        out = []
        for name in self.mine:
            agent = self.agents[name]
            for o in agent.outboxes:
                stats = getattr(o.sg, "stats", None)
                if stats is not None:
                    out.append((f"M loss on edge {name} -> {o.dst}", stats.loss))
            for i in agent.inboxes:
                stats = getattr(i.si, "stats", None)
                if stats is not None:
                    out.append((f"I loss on edge {i.src} -> {name}", stats.loss))
            for what, model in (("state M loss of agent", agent.state_sg), ("Aux loss of agent", agent.aux)):
                stats = getattr(model, "stats", None)
                if stats is not None:
                    out.append((f"{what} '{name}'", stats.loss))
        return out

    def check_parameters(self) -> None:
        """Raise :class:`Diverged` naming the first agent (or its M / I) holding a non-finite parameter."""
        named = []
        for name in self.mine:
            agent = self.agents[name]
            for i, module in enumerate(agent.modules()):
                owner = f"agent '{name}'" if i < 2 else f"a synthesizer of agent '{name}'"
                named += [(f"parameter {pname} of {owner}", p) for pname, p in module.named_parameters()]
        bad = first_nonfinite(named)
        if bad is not None:
            raise Diverged(self.tick, f"non-finite {bad}")

    def _forget(self) -> None:
        """The task forgets batches no loss port can still score (behind every loss-port agent)."""
        if not self._loss_agents:
            if self.placement.workers == 1:
                return
            below = self.tick - self.horizon  # a worker without loss agents never scores a batch
        else:
            below = min(self.agents[n].last_id for n in self._loss_agents) - self.horizon
        if below > self._forgot:
            self._forgot = below
            self.task.forget(below)

    # ----- composition and metrics -------------------------------------------------------------------
    @torch.no_grad()
    def compose(self, inputs: dict[str, torch.Tensor], tick: int | None = None,
                synthetic: bool = False) -> dict[str, torch.Tensor]:
        """The agents as ONE network on real messages (``synthetic``: each reads its synthetic inputs).

        With ``tick``, only agents whose clock fires act and the others' last outputs are held (so a
        recurrent multi-timescale system is evaluated with its own clocks). Latency is ignored here:
        composition is the synchronous network the agents learned to be; an edge closing a cycle reads what
        its sender sent at the previous call (zeros at first), as in training."""
        outs: dict[str, torch.Tensor] = {}
        for name in self.graph.order:
            agent = self.agents[name]
            if tick is not None and not fires(agent.spec.clock, tick):
                continue
            xs: list[torch.Tensor | None] = []
            for inbox in agent.inboxes:
                key = (inbox.src, name)
                if inbox.from_task:
                    h = inputs[inbox.src[len(TASK_PREFIX):]].to(agent.device)
                elif synthetic and inbox.si is not None:
                    src = inbox.spec.interface.synthetic_input.context
                    c = inputs[src[len(TASK_PREFIX):]].to(agent.device) if is_port(src) else self._held[(src, name)]
                    h = inbox.si(c)
                elif key in self._held:
                    h = self._held[key]
                elif inbox.back_edge:  # a cycle starts from zero messages, as in training
                    h = None
                else:
                    raise CorporationError(f"composition: '{name}' acts before '{inbox.src}' ever sent "
                                           "to it; check the clocks' phases")
                xs.append(h)
            if any(x is None for x in xs):
                rows = next(x.shape[0] for x in xs if x is not None)
                xs = [x if x is not None else i.zeros(rows) for x, i in zip(xs, agent.inboxes)]
            out = agent.forward_eval(xs[0] if len(xs) == 1 else torch.cat(xs, dim=1))
            for outbox in agent.outboxes:
                h = agent.project(outbox.dst, out)
                if outbox.to_task:
                    outs[outbox.dst[len(TASK_PREFIX):]] = h.to(self.device)
                else:
                    self._held[(name, outbox.dst)] = h.to(outbox.device) if outbox.device is not None else h
        return outs

    def reset_state(self) -> None:
        """Forget evaluation state (recurrent states, held messages) before a new test sequence."""
        self._held.clear()
        for agent in self.agents.values():
            agent.reset_eval_state()

    def evaluate(self) -> dict[str, float]:
        """Test metrics from the task, on the composed system (modules in eval mode meanwhile)."""
        out = self._evaluate()
        self._note("evaluate")
        return out

    def _evaluate(self) -> dict[str, float]:
        with self._eval_mode():
            self.reset_state()
            try:
                return self.task.evaluate(self)
            finally:
                self.reset_state()

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Every module in eval mode meanwhile (batch norm on running statistics), then as it was."""
        modules = [m for a in self.agents.values() for m in a.modules()]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            yield
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)

    @torch.no_grad()
    def act(self, obs: Any) -> Any:
        """The trained agents' greedy actions for a batch of raw observations, in the environment's own
        format (gymnasium: an (N, ...) array -> N actions; pettingzoo: ``{env agent: (N, ...)}`` -> the same
        of actions). A recurrent policy carries its state across calls: :meth:`reset_state` at a new
        episode."""
        policy = getattr(self.task, "policy", None)
        if policy is None:
            raise CorporationError(f"task '{self.scenario.task.kind}' is not an environment: Engine.act needs "
                                   "a task with a policy (gymnasium, pettingzoo); use compose() for outputs")
        with self._eval_mode():
            return policy(self, obs)

    def collect(self) -> dict[str, float]:
        """Training metrics since the last call: task, M (sg/...), I (si/...), and agent counters."""
        out = self._collect()
        self._note("collect")
        return out

    def _collect(self) -> dict[str, float]:
        task = dict(self.task.train_metrics())
        out = task if self._loss_agents or self.placement.workers == 1 else {}  # scored on one worker
        mine = set(self.mine)
        for name in self.mine:  # learners beside the agents (e.g. an actor-critic's loss terms)
            for learner in self.agents[name].loss_ports.values():
                out.update(learner.read())
        for key, outbox, inbox in self._edges:
            if outbox.sg is not None and outbox.spec.src in mine:
                out.update(outbox.sg.stats.read(f"sg/{key}"))
            if inbox.si is not None and inbox.spec.dst in mine:
                out.update(inbox.si.stats.read(f"si/{key}"))
        for name, agent in self.agents.items():
            if name not in mine:
                continue
            if agent.state_sg is not None:
                out.update(agent.state_sg.stats.read(f"sg/{name}-state"))
            if agent.aux is not None:
                out.update(agent.aux.stats.read(f"sg/{name}-aux"))
            for k in ("updates", "skipped", "idle", "synthetic_inputs"):
                out[f"train/{name}/{k}"] = float(agent.counts[k])
        return out

    def run(self, ticks: int | None = None, on_log: Callable[[dict[str, Any]], None] | None = None,
            on_tick: Callable[[int], None] | None = None,
            on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
            stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Run ``ticks`` (default ``train.ticks``), logging every ``log_every`` and evaluating every
        ``eval_every`` ticks and at the end; returns the last logged record. ``on_checkpoint`` receives a
        checkpoint (:meth:`checkpoint`) after every evaluation (needs ``checkpoints=True``); ``stop`` is
        asked before each tick and ends the run early when it returns True.

        The log and evaluation of the last tick, when the schedule does not ask for them, are not
        journaled: a checkpoint then stands for the run as the schedule goes on, so a run resumed to a
        later end logs exactly what an uninterrupted run logs."""
        spec = self.scenario.train
        end = self.tick + (ticks if ticks is not None else spec.ticks)
        last: dict[str, Any] = {}
        while self.tick < end:
            if stop is not None and stop():
                break
            self.step()
            t = self.tick
            if self._journal is not None:
                self._maybe_snapshot(end)
            scheduled_eval = t % spec.eval_every == 0
            scheduled_log = scheduled_eval or t % spec.log_period == 0
            if scheduled_log or t == end:
                last = {"tick": t, **(self.collect() if scheduled_log else self._collect())}
                if scheduled_eval or t == end:
                    last.update(self.evaluate() if scheduled_eval else self._evaluate())
                    self.check_parameters()
                bad = [k for k, v in last.items() if isinstance(v, float) and not math.isfinite(v)]
                if bad:
                    raise Diverged(t, f"non-finite metric {bad[0]}")
                if on_log is not None:
                    on_log(last)
                if (scheduled_eval or t == end) and on_checkpoint is not None and self._journal is not None \
                        and not self.cannot_checkpoint:
                    on_checkpoint(self.checkpoint())
            if on_tick is not None:
                on_tick(t)
        return last
