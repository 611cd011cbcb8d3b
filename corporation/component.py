"""A locked component: the agents joined by ``backprop`` edges, trained together by one backward pass.

The component owns what its members accumulate during an update window: their task losses, the (h, g_hat)
pairs of their outgoing ``dni`` edges and the detached inputs of their incoming ``dni`` edges (whose
gradients become the targets of the senders' M). When every member is due, :meth:`update` runs ONE backward
pass over all of it, each member steps (with its own p_update) and the targets go upstream on the
transport. The engine only asks ``due()`` and calls ``update``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .guard import Diverged, first_nonfinite
from .messages import GradientMessage
from .optim import step_together
from .transport import LocalTransport

if TYPE_CHECKING:
    from .agent import Agent


@dataclass
class Leaf:
    """A detached ``dni`` input: its gradient is the target for message ``batch_id`` of edge ``channel``."""

    channel: str
    back_latency: int
    batch_id: int
    h: torch.Tensor


@dataclass
class Window:
    """What the members accumulated since the last update, per member (the backward pass takes each
    member's losses, then its pairs, in member order: a fixed order of gradient accumulation)."""

    losses: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # agent -> task losses
    pairs: dict[str, list[tuple[torch.Tensor, torch.Tensor, str]]] = field(default_factory=dict)  # (h, g_hat, where)
    leaves: dict[str, list[Leaf]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.losses or self.pairs or self.leaves)


class Component:
    """Agents joined by backprop edges (in execution order)."""

    def __init__(self, members: list[Agent], transport: LocalTransport,
                 trace: Callable[..., None] | None = None):
        self.members = members
        self.transport = transport
        self.window = Window()
        self.trace = trace
        self.updates = 0  # update calls so far: a locked message sent before the last one has a spent graph
        for a in members:
            a.component = self

    # ----- what members hand in ----------------------------------------------------------------------
    def add_loss(self, agent: str, loss: torch.Tensor) -> None:
        self.window.losses.setdefault(agent, []).append(loss)

    def add_pair(self, agent: str, h: torch.Tensor, g_hat: torch.Tensor, where: str) -> None:
        self.window.pairs.setdefault(agent, []).append((h, g_hat, where))

    def add_leaf(self, agent: str, leaf: Leaf) -> None:
        self.window.leaves.setdefault(agent, []).append(leaf)

    # ----- the update --------------------------------------------------------------------------------
    def due(self) -> bool:
        return all(a.due for a in self.members)

    def at_rest(self) -> bool:
        return self.window.empty() and all(a.at_rest() for a in self.members)

    def update(self, tick: int) -> None:
        """One backward pass for the component, then each member steps (with its p_update)."""
        backward_together([self], tick)

    def prepare(self, tick: int) -> tuple[list[bool], list[tuple[str, torch.Tensor]], list[torch.Tensor],
                                          list[torch.Tensor | None]]:
        """Draw each member's p_update and, if any steps, close the windows: (go, named tensors for the
        divergence guard, tensors and gradients for the backward pass, in member order)."""
        members = self.members
        go = [a.draw_update() for a in members]
        if not any(go):
            return go, [], [], []
        w = self.window
        for a in members:
            for h, g, where in a.close_window(tick):
                self.add_pair(a.name, h, g, where)
        named = [(f"loss of agent '{name}'", x) for name, xs in w.losses.items() for x in xs]
        named += [(f"g_hat on {where}", g) for ps in w.pairs.values() for _, g, where in ps]
        tensors: list[torch.Tensor] = []
        grads: list[torch.Tensor | None] = []
        for a in members:
            losses = w.losses.get(a.name, [])
            tensors += losses
            grads += [None] * len(losses)
            for h, g, _ in w.pairs.get(a.name, []):
                tensors.append(h)
                grads.append(g)
        return go, named, tensors, grads

    def after_backward(self, tick: int, go: list[bool]) -> list[torch.optim.Optimizer]:
        """After the backward pass: targets upstream, each member's state M; the optimizers to step."""
        if not any(go):
            return []
        w = self.window
        for a in self.members:
            for leaf in w.leaves.get(a.name, []):
                if leaf.h.grad is not None:  # per-example target: B * dL/dh
                    target = GradientMessage(leaf.batch_id, leaf.h.grad * leaf.h.shape[0], tick)
                    self.transport.post("target", leaf.channel, target, tick + leaf.back_latency)
            a.after_backward(tick)
        return [o for a, ok in zip(self.members, go) if (o := a.optimizer_for(tick, ok)) is not None]

    def close(self, tick: int, go: list[bool]) -> None:
        """After the optimizer steps: each member starts a new window."""
        self.window = Window()
        self.updates += 1
        for a, ok in zip(self.members, go):
            a.finish_window(tick, ok, stepped=True)
            a.detach_locked()
            if self.trace is not None:
                self.trace(tick, "update" if ok else "skip", a.name, None)


def backward_together(components: list[Component], tick: int) -> None:
    """Update several due components with ONE autograd call: their graphs are disjoint (a ``dni`` edge
    detaches, only ``backprop`` edges join agents, and those are inside a component), so this is the same
    computation as one backward per component, with less overhead; likewise the members' optimizers step
    together (:func:`corporation.optim.step_together`)."""
    prepared = [(c, c.prepare(tick)) for c in components]
    bad = first_nonfinite([x for _, (_, named, _, _) in prepared for x in named])
    if bad is not None:
        raise Diverged(tick, f"non-finite {bad}")
    tensors = [x for _, (_, _, ts, _) in prepared for x in ts]
    grads = [g for _, (_, _, _, gs) in prepared for g in gs]
    if tensors:
        torch.autograd.backward(tensors, grads)
    optimizers = [o for c, (go, _, _, _) in prepared for o in c.after_backward(tick, go)]
    step_together(optimizers)
    for c, (go, _, _, _) in prepared:
        c.close(tick, go)
