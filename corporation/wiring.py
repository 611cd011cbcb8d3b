"""Building an engine's parts from a scenario: agents (bodies, heads, state M), each edge's two halves (M in
the sender's outbox, I in the receiver's inbox) and their connections through the transport.

Construction order is part of the results (every module draws from its owner's generator, in a fixed
order), so it lives in one place; the scheduler (:mod:`corporation.engine`) only runs what is built here.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .agent import Agent
from .errors import CorporationError
from .graph import Graph, back_edges
from .inbox import Inbox
from .interfaces import SyntheticInput
from .messages import GradientMessage
from .models import build_model, init_parameters
from .outbox import Outbox
from .registry import SYNTHESIZERS
from .seeding import generator
from .spec import TASK_PREFIX, EdgeSpec, Scenario, head_key, is_port
from .tasks.base import PortLearner, TaskLoss
from .transport import LocalTransport

Trace = Callable[..., None]  # (tick, kind, where, batch_id, value)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unavailable cuda is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CorporationError(f"device: '{name}' requested but CUDA is not available here: set device: cpu "
                               "(or auto), or pass --device cpu")
    return torch.device(name)


def port_learner(task: Any, port: str) -> PortLearner:
    """What scores an agent's outputs at loss port ``port``, beside the agent: the task's ``learner(port)``
    when it provides one (e.g. an actor-critic), else the task's loss (:class:`TaskLoss`)."""
    make = getattr(task, "learner", None)
    learner = make(port) if make is not None else None
    return learner if learner is not None else TaskLoss(task, port)


def _traced_target(outbox: Outbox, trace: Callable[..., None], grad: GradientMessage, tick: int) -> None:
    outbox.receive_target(grad, tick)
    trace(tick, "target", outbox.spec.key, grad.batch_id, grad)


def agent_device(scenario: Scenario, name: str, default: torch.device) -> torch.device:
    """``agents.<name>.device``, else the scenario's device."""
    own = scenario.agents[name].device
    return default if own is None else resolve_device(own)


def build_agent(scenario: Scenario, graph: Graph, name: str, device: torch.device, horizon: int) -> Agent:
    """An agent with its body, heads and (``state.kind: dni``) state M, drawn from its own generator."""
    spec, g = scenario.agents[name], graph
    gen = generator(scenario.seed, "agent", name)
    body = build_model(spec.model, g.in_size[name], g.out_size[name], gen, device)
    heads = nn.ModuleDict()
    for dst in sorted(spec.heads):
        with torch.random.fork_rng(devices=[]):
            head = nn.Linear(g.out_size[name], g.msg_size[(name, dst)])
        init_parameters(head, gen)
        heads[head_key(dst)] = head.to(device)
    agent = Agent(name, spec, body, heads, gen, horizon)
    agent.place(device)
    if spec.state.kind == "dni":
        factory = SYNTHESIZERS.get(spec.state.sg.kind).factory
        agent.set_state_sg(factory(spec.state.sg, body.state_size(), 0, gen, device, spec.optimizer))
    return agent


@dataclass
class Wiring:
    """What the scheduler needs to run the wired agents, in the orders that fix the results."""

    message_channels: list[str]  # delivery at a tick's start: the scenario's edge order
    port_edges: list[EdgeSpec]  # task input edges
    target_channels: list[str]  # targets train the senders' M at a tick's end, reverse execution order
    target_outboxes: list[Outbox]  # the same, as outboxes
    loss_agents: list[str]  # agents feeding loss ports (the task forgets behind them)
    edges: list[tuple[str, Outbox, Inbox]]  # agent-to-agent edges in execution order: (key, outbox, inbox)


def wire(scenario: Scenario, graph: Graph, agents: dict[str, Agent], transport: LocalTransport, task: Any,
         default_device: torch.device, trace: Trace | None) -> Wiring:
    """Build every edge's halves (M in the sender's outbox, I in the receiver's inbox, drawn from their
    owners' generators in edge order) and connect them through the transport."""
    g, t = graph, transport
    sgs: dict[tuple[str, str], Any] = {}
    sis: dict[tuple[str, str], Any] = {}
    for e in sorted(scenario.edges, key=lambda e: (e.src, e.dst)):
        iface = e.interface
        if iface is None or iface.kind != "dni":
            continue
        sender, receiver = agents[e.src], agents[e.dst]
        ctx = g.sg_context_size(e.src, e.dst, iface)
        factory = SYNTHESIZERS.get(iface.sg.kind).factory
        sgs[(e.src, e.dst)] = factory(iface.sg, g.msg_size[(e.src, e.dst)], ctx, sender.generator,
                                      sender.device, sender.spec.optimizer)
        si = iface.synthetic_input
        if si is not None:
            sis[(e.src, e.dst)] = SyntheticInput(si, g.context_size(si.context, e.dst), g.msg_size[(e.src, e.dst)],
                                                 receiver.generator, receiver.device, receiver.spec.optimizer)
    back = back_edges(scenario, g.order)
    message_channels = [e.key for e in scenario.edges if not is_port(e.dst)]
    port_edges = [e for e in scenario.edges if is_port(e.src)]
    for name in g.order:
        agent = agents[name]
        for e in g.in_edges(name):
            inbox = Inbox(e, g.msg_size[(e.src, name)], agent.device, sis.get((e.src, name)),
                          back_edge=(e.src, name) in back)  # closes a cycle: never blocks
            agent.add_inbox(inbox)
            t.connect("message", e.key, functools.partial(agent.receive, inbox))
        for e in g.out_edges(name):
            clock = None if is_port(e.dst) else scenario.agents[e.dst].clock
            outbox = Outbox(e, t, clock, sgs.get((e.src, e.dst)), (e.src, e.dst) in sis)
            if not is_port(e.dst):
                outbox.deliver_to(agent_device(scenario, e.dst, default_device))
            else:
                port = e.dst[len(TASK_PREFIX):]
                agent.add_loss_port(port, port_learner(task, port))
            agent.add_outbox(outbox)
    for name in g.order:  # what each agent needs of the task ports and of its other inboxes
        agent = agents[name]
        for outbox in agent.outboxes:
            c = outbox.spec.interface.context if outbox.dni else None
            if c is not None:
                agent.add_port_context(c[len(TASK_PREFIX):])
        for inbox in agent.inboxes:
            if inbox.si is None:
                continue
            source = inbox.spec.interface.synthetic_input.context
            inbox.use_si_context(functools.partial(agent.si_context, inbox))
            if is_port(source):
                agent.add_port_context(source[len(TASK_PREFIX):])
            else:
                next(i for i in agent.inboxes if i.src == source).keep_contexts = True
        for port, store in agent.port_contexts.items():
            t.connect("message", f"context:{port}>{name}", store.deliver)
        if agent.needs_live_ids():
            t.connect("message", f"ids>{name}", agent.note_emitted)
        agent.set_trace(trace)
    target_channels = [e.key for a in reversed(g.order) for e in reversed(g.out_edges(a))
                       if not is_port(e.dst) and e.interface is not None and e.interface.kind == "dni"]
    for name in g.order:
        for outbox in agents[name].outboxes:
            if outbox.sg is not None:
                sink = outbox.receive_target if trace is None else functools.partial(_traced_target, outbox, trace)
                t.connect("target", outbox.channel, sink)
    outboxes = {o.channel: o for a in agents.values() for o in a.outboxes}
    inboxes = {(i.src, a.name): i for a in agents.values() for i in a.inboxes}
    edges = [(o.spec.key, o, inboxes[(name, o.dst)]) for name in g.order
             for o in agents[name].outboxes if not o.to_task]
    return Wiring(message_channels, port_edges, target_channels, [outboxes[c] for c in target_channels],
                  [n for n in g.order if agents[n].loss_ports], edges)
