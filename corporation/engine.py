"""The local engine: one process, integer ticks, deterministic.

Each tick: the task emits batch ``tick``; due messages are delivered; due agents act in topological order
(ties by name); every locked component whose members are all due runs ONE backward pass over what its
members accumulated (task losses, and <h, g_hat> for each outgoing ``dni`` edge) and its members step;
the gradients of their detached ``dni`` inputs go upstream as targets; finally due targets train the
senders' M (gradients delivered in reverse order). Files, argv and progress bars live in the runner.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from . import checkpoint as checkpoint_mod
from .agent import Agent, head_key
from .clock import fires
from .errors import CorporationError
from .graph import Graph, build_graph
from .guard import Diverged, first_nonfinite
from .interfaces import SyntheticInput
from .messages import GradientMessage, Link, Message
from .models import build_model, init_parameters
from .registry import SYNTHESIZERS, TASKS
from .schema import to_plain
from .seeding import generator
from .spec import TASK_PREFIX, Scenario, is_port


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unavailable cuda is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CorporationError(f"device: '{name}' requested but CUDA is not available here: set device: cpu "
                               "(or auto), or pass --device cpu")
    return torch.device(name)


class Engine:
    """Runs a scenario in one process. ``step()`` advances one tick; ``evaluate()`` scores the composition."""

    def __init__(self, scenario: Scenario, device: str | None = None, checkpoints: bool = False):
        self.scenario = scenario
        self.graph: Graph = build_graph(scenario)
        self.device = resolve_device(device or scenario.device)
        self.task = TASKS.get(scenario.task.kind).factory(scenario.task, self.device,
                                                          generator(scenario.seed, "task"))
        g = self.graph
        self.links: dict[tuple[str, str], Link] = {(e.src, e.dst): Link(e) for e in scenario.edges}
        for link in self.links.values():  # a sampled edge follows its receiver's clock
            link.clock = None if is_port(link.dst) else scenario.agents[link.dst].clock
        self.agents: dict[str, Agent] = {}
        for name in g.order:
            self.agents[name] = self._build_agent(name)
        self._build_interfaces()
        # some edge has a synthetic input: evaluation also scores the parts reading synthetic inputs only
        self.synthetic_inputs = any(link.si is not None for link in self.links.values())
        # agent contexts of synthetic inputs, kept per id until I's target arrives (an inbox drops a message
        # as soon as its receiver has processed that id, usually long before the real message comes)
        self._contexts: dict[tuple[str, str], dict[int, torch.Tensor]] = {
            (link.spec.interface.synthetic_input.context, link.dst): {} for link in self.links.values()
            if link.si is not None and not is_port(link.spec.interface.synthetic_input.context)}
        self.components = [[self.agents[n] for n in comp] for comp in g.components]
        self.link_order = [self.links[(e.src, e.dst)] for a in g.order for e in g.out_edges(a)
                           if not is_port(e.dst)]
        self.port_links: dict[str, list[Link]] = {}
        for (src, _), link in self.links.items():
            if is_port(src):
                self.port_links.setdefault(src[len(TASK_PREFIX):], []).append(link)
        self.horizon = 2 + max([e.latency + e.back_latency for e in scenario.edges], default=0)
        self.tick = 0
        self.live: list[int] = []  # ids the task emitted and still remembers
        self._live_set: set[int] = set()
        self._held: dict[tuple[str, str], torch.Tensor] = {}
        # checkpoints (corporation.checkpoint): the last snapshot taken at rest and the calls made since
        self._journal: list[str] | None = None
        self._snapshot: bytes | None = None
        self._snapshot_fresh = False  # a snapshot was taken since the last checkpoint
        if checkpoints:
            self._journal = []
            self._take_snapshot()

    # ----- construction ------------------------------------------------------------------------------
    def _build_agent(self, name: str) -> Agent:
        spec, g = self.scenario.agents[name], self.graph
        gen = generator(self.scenario.seed, "agent", name)
        body = build_model(spec.model, g.in_size[name], g.out_size[name], gen, self.device)
        heads = nn.ModuleDict()
        for dst in sorted(spec.heads):
            with torch.random.fork_rng(devices=[]):
                head = nn.Linear(g.out_size[name], g.msg_size[(name, dst)])
            init_parameters(head, gen)
            heads[head_key(dst)] = head.to(self.device)
        in_links = [self.links[(e.src, e.dst)] for e in g.in_edges(name)]
        out_links = [self.links[(e.src, e.dst)] for e in g.out_edges(name)]
        agent = Agent(name, spec, body, heads, in_links, out_links, gen)
        if spec.state.kind == "dni":
            factory = SYNTHESIZERS.get(spec.state.sg.kind).factory
            agent.state_sg = factory(spec.state.sg, body.state_size(), 0, gen, self.device, spec.optimizer)
        return agent

    def _build_interfaces(self) -> None:
        g = self.graph
        for (src, dst), link in sorted(self.links.items()):
            iface = link.spec.interface
            if iface is None or iface.kind != "dni":
                continue
            sender, receiver = self.agents[src], self.agents[dst]
            ctx = g.context_size(iface.context) if iface.context else 0
            factory = SYNTHESIZERS.get(iface.sg.kind).factory
            link.sg = factory(iface.sg, g.msg_size[(src, dst)], ctx, sender.generator, self.device,
                              sender.spec.optimizer)
            si = iface.synthetic_input
            if si is not None:
                link.si = SyntheticInput(si, g.context_size(si.context, dst), g.msg_size[(src, dst)],
                                         receiver.generator, self.device, receiver.spec.optimizer)

    # ----- the World an agent sees -------------------------------------------------------------------
    def context(self, source: str, batch_id: int, receiver: str) -> torch.Tensor:
        if is_port(source):
            return self.task.context(source[len(TASK_PREFIX):], batch_id)
        if (source, receiver) in self._contexts:
            return self._contexts[(source, receiver)][batch_id]
        return self.links[(source, receiver)].inbox[batch_id].h.detach()

    def has_context(self, source: str, batch_id: int, receiver: str) -> bool:
        if is_port(source):
            return batch_id in self._live_set
        if (source, receiver) in self._contexts:
            return batch_id in self._contexts[(source, receiver)]
        return batch_id in self.links[(source, receiver)].inbox

    def live_ids(self, after: int) -> list[int]:
        return [k for k in self.live if k > after]

    def score(self, port: str, batch_id: int, output: torch.Tensor) -> torch.Tensor | None:
        return self.task.loss(port, batch_id, output)

    def send(self, link: Link, msg: Message, tick: int) -> None:
        if link.spec.latency == 0:
            self._arrive(link, msg)
        else:
            link.in_flight.append((tick + link.spec.latency, msg))

    def _arrive(self, link: Link, msg: Message) -> None:
        link.deliver(msg)
        if (link.src, link.dst) in self._contexts:
            self._contexts[(link.src, link.dst)][msg.batch_id] = msg.h.detach()
        if link.si is not None:
            receiver = self.agents[link.dst]
            source = link.spec.interface.synthetic_input.context
            if self.has_context(source, msg.batch_id, link.dst):
                link.si.train_on(self.context(source, msg.batch_id, link.dst), msg.h, self.tick - msg.sent)
            if not link.spec.hold and msg.batch_id <= receiver.last_id:
                link.inbox.pop(msg.batch_id, None)  # too late to be used: it only trained I

    # ----- one tick ----------------------------------------------------------------------------------
    def step(self) -> None:
        """Advance one tick (see the module doc)."""
        self._step()
        self._note("step")

    def _step(self) -> None:
        t = self.tick
        emission = self.task.emit(t)
        if emission is not None:
            self.live.append(t)
            self._live_set = set(self.live)
            for port, links in self.port_links.items():
                for link in links:
                    self.send(link, Message(t, emission.inputs[port], t, emission.start, emission.end,
                                             emission.reset), t)
        for link in self.links.values():
            for msg in link.due(t):
                self._arrive(link, msg)
        for name in self.graph.order:
            agent = self.agents[name]
            if fires(agent.spec.clock, t):
                agent.act(t, self)
        for members in self.components:
            if all(a.due for a in members):
                self._update(members, t)
        for link in reversed(self.link_order):
            for grad in link.due_gradients(t):
                link.sg.train_on(grad.batch_id, grad.g, t)
        bad = first_nonfinite(self._regression_losses())
        if bad is not None:
            raise Diverged(t, f"non-finite {bad}")
        self._forget()
        self.tick += 1

    def _regression_losses(self) -> list[tuple[str, torch.Tensor]]:
        """The running loss sums of every M, I and Aux head (non-finite as soon as one loss was)."""
        out = []
        for link in self.link_order:
            for what, model in (("M loss on edge", link.sg), ("I loss on edge", link.si)):
                stats = getattr(model, "stats", None)
                if stats is not None:
                    out.append((f"{what} {link.src} -> {link.dst}", stats.loss))
        for name, agent in self.agents.items():
            for what, model in (("state M loss of agent", agent.state_sg), ("Aux loss of agent", agent.aux)):
                stats = getattr(model, "stats", None)
                if stats is not None:
                    out.append((f"{what} '{name}'", stats.loss))
        return out

    def check_parameters(self) -> None:
        """Raise :class:`Diverged` naming the first agent (or its M / I) holding a non-finite parameter."""
        named = []
        for name, agent in self.agents.items():
            for i, module in enumerate(agent.modules()):
                owner = f"agent '{name}'" if i < 2 else f"a synthesizer of agent '{name}'"
                named += [(f"parameter {pname} of {owner}", p) for pname, p in module.named_parameters()]
        bad = first_nonfinite(named)
        if bad is not None:
            raise Diverged(self.tick, f"non-finite {bad}")

    def _update(self, members: list[Agent], t: int) -> None:
        """One backward pass for a locked component, then each member steps (with its p_update)."""
        go = [a.draw_update() for a in members]
        if any(go):
            for a in members:
                a.close_window(t)
            tensors: list[torch.Tensor] = []
            grads: list[torch.Tensor | None] = []
            for a in members:
                tensors += a.losses
                grads += [None] * len(a.losses)
                for h, g, _ in a.grads:
                    tensors.append(h)
                    grads.append(g)
            named = [(f"loss of agent '{a.name}'", x) for a in members for x in a.losses]
            named += [(f"g_hat on {where}", g) for a in members for _, g, where in a.grads]
            bad = first_nonfinite(named)
            if bad is not None:
                raise Diverged(t, f"non-finite {bad}")
            if tensors:
                torch.autograd.backward(tensors, grads)
            for a in members:
                for link, batch_id, leaf in a.leaves:
                    if leaf.grad is not None:  # per-example target: B * dL/dh
                        link.post_gradient(GradientMessage(batch_id, leaf.grad * leaf.shape[0], t), t)
                a.after_backward(t)
        closed = [link.dst[len(TASK_PREFIX):] for a in members for link in a.out_links if link.to_task]
        window_closed = getattr(self.task, "window_closed", None)
        if closed and window_closed is not None:
            window_closed(closed)  # the graphs of outputs it holds are spent: it must not reuse them
        for a, ok in zip(members, go):
            a.finish_window(t, ok)
            for link in a.out_links:
                if link.locked:
                    link.detach_graphs()

    def _forget(self) -> None:
        oldest = min(a.last_id for a in self.agents.values()) - self.horizon
        for store in self._contexts.values():
            for k in [k for k in store if k < oldest]:
                del store[k]
        if self.live and self.live[0] < oldest:
            self.live = [k for k in self.live if k >= oldest]
            self._live_set = set(self.live)
            self.task.forget(oldest)

    # ----- composition and metrics -------------------------------------------------------------------
    @torch.no_grad()
    def compose(self, inputs: dict[str, torch.Tensor], tick: int | None = None,
                synthetic: bool = False) -> dict[str, torch.Tensor]:
        """The agents as ONE network on real messages (``synthetic``: each reads its synthetic inputs).

        With ``tick``, only agents whose clock fires act and the others' last outputs are held (so a
        recurrent multi-timescale system is evaluated with its own clocks). Latency is ignored here:
        composition is the synchronous network the agents learned to be."""
        outs: dict[str, torch.Tensor] = {}
        for name in self.graph.order:
            agent = self.agents[name]
            if tick is not None and not fires(agent.spec.clock, tick):
                continue
            xs = []
            for link in agent.in_links:
                key = (link.src, link.dst)
                if link.from_task:
                    h = inputs[link.src[len(TASK_PREFIX):]]
                elif synthetic and link.si is not None:
                    src = link.spec.interface.synthetic_input.context
                    c = inputs[src[len(TASK_PREFIX):]] if is_port(src) else self._held[(src, link.dst)]
                    h = link.si(c)
                elif key in self._held:
                    h = self._held[key]
                else:
                    raise CorporationError(f"composition: '{link.dst}' acts before '{link.src}' ever sent "
                                           "to it; check the clocks' phases")
                xs.append(h)
            out = agent.forward_eval(xs[0] if len(xs) == 1 else torch.cat(xs, dim=1))
            for link in agent.out_links:
                h = agent.project(link.dst, out)
                if link.to_task:
                    outs[link.dst[len(TASK_PREFIX):]] = h
                else:
                    self._held[(link.src, link.dst)] = h
        return outs

    def reset_state(self) -> None:
        """Forget evaluation state (recurrent states, held messages) before a new test sequence."""
        self._held.clear()
        for agent in self.agents.values():
            agent.eval_state = None

    def evaluate(self) -> dict[str, float]:
        """Test metrics from the task, on the composed system (modules in eval mode meanwhile)."""
        out = self._evaluate()
        self._note("evaluate")
        return out

    def _evaluate(self) -> dict[str, float]:
        modules = [m for a in self.agents.values() for m in a.modules()]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            self.reset_state()
            return self.task.evaluate(self)
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
            self.reset_state()

    def collect(self) -> dict[str, float]:
        """Training metrics since the last call: task, M (sg/...), I (si/...), and agent counters."""
        out = self._collect()
        self._note("collect")
        return out

    def _collect(self) -> dict[str, float]:
        out = dict(self.task.train_metrics())
        for link in self.link_order:
            if link.sg is not None:
                out.update(link.sg.stats.read(f"sg/{link.key}"))
            if link.si is not None:
                out.update(link.si.stats.read(f"si/{link.key}"))
        for name, agent in self.agents.items():
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
                if (scheduled_eval or t == end) and on_checkpoint is not None and self._journal is not None:
                    on_checkpoint(self.checkpoint())
            if on_tick is not None:
                on_tick(t)
        return last

    # ----- checkpoints (corporation.checkpoint) ------------------------------------------------------
    def _note(self, call: str) -> None:
        if self._journal is not None:
            self._journal.append(call)

    def at_rest(self) -> bool:
        """No update window is open anywhere (cheap check; graphs held elsewhere are found when pickling)."""
        return all(a.at_rest() for a in self.agents.values())

    def _take_snapshot(self) -> bool:
        if not self.at_rest():
            return False
        journal, self._journal, snapshot, self._snapshot = self._journal, None, self._snapshot, None
        try:
            data = checkpoint_mod.dumps(self, checkpoint_mod.static_objects(self.task))
        except checkpoint_mod.NotAtRest:
            return False
        finally:
            self._journal, self._snapshot = journal, snapshot
        self._snapshot, self._journal, self._snapshot_fresh = data, [], True
        return True

    def _maybe_snapshot(self, end: int) -> None:
        """Snapshot at rest at the first chance after a checkpoint and again close before the next one, so
        a checkpoint replays few ticks (evaluation ticks are known in advance; interrupts are not)."""
        every = self.scenario.train.eval_every
        nxt = min(end, (self.tick // every + 1) * every) if self.tick % every else self.tick
        if not self._snapshot_fresh or nxt - self.tick <= self._snapshot_horizon():
            self._take_snapshot()

    def _snapshot_horizon(self) -> int:
        windows = [a.spec.clock.period * a.spec.update.unroll for a in self.agents.values()]
        return 2 * max(windows, default=1) + self.horizon

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to continue exactly from this tick (see corporation.checkpoint)."""
        if self._journal is None or self._snapshot is None:
            raise CorporationError("this engine keeps no checkpoints: build it with Engine(..., checkpoints=True)")
        self._snapshot_fresh = False
        weights = {name: {f"body.{k}": v.detach().cpu() for k, v in a.body.state_dict().items()}
                   | {f"heads.{k}": v.detach().cpu() for k, v in a.heads.state_dict().items()}
                   for name, a in self.agents.items()}
        return checkpoint_mod.pack(self._snapshot, self._journal, self.tick, to_plain(self.scenario), weights)

    @classmethod
    def restore(cls, ckpt: dict[str, Any], scenario: Scenario) -> Engine:
        """The engine of checkpoint ``ckpt`` (its snapshot, then its journal replayed), running ``scenario``
        (the run's own, where only ``train`` keys may differ)."""
        fresh = cls(scenario)  # builds the task: constant data the snapshot refers to
        engine: Engine = checkpoint_mod.loads(ckpt["snapshot"], checkpoint_mod.static_objects(fresh.task))
        engine.scenario = scenario
        for call in ckpt["journal"]:
            getattr(engine, f"_{call}")()
        engine._snapshot, engine._journal, engine._snapshot_fresh = ckpt["snapshot"], list(ckpt["journal"]), False
        return engine
