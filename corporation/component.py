"""A locked component: the agents joined by ``backprop`` edges, trained together by one backward pass.

The component owns what its members accumulate during an update window: their task losses, the (h, g_hat)
pairs of their outgoing ``dni`` edges and the detached inputs of their incoming ``dni`` edges (whose
gradients become the targets of the senders' M). When every member is due, :meth:`update` runs ONE backward
pass over all of it, each member steps (with its own p_update) and the targets go upstream on the
transport. The engine only asks ``due()`` and calls ``update``.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .errors import ScenarioError
from .feedback import (
    DirectFeedback,
    FeedbackAlignment,
    LayerTap,
    OutputTap,
    aligned_feedback,
    first_linear,
    tap,
    tap_layer,
)
from .guard import Diverged, first_nonfinite
from .messages import GradientMessage
from .optim import step_together
from .registry import SYNTHESIZERS
from .spec import TASK_PREFIX, head_key
from .targets import KeepSaved, chained, mixing, needs_split, vjp
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
class Chain:
    """A receiver's batch whose upstream targets wait for the targets of its own out-edge Ms
    (``sg.target: lambda | exact`` on an in-edge): the leaves, their own-loss gradients, and the
    (h, applied g_hat) of every out-edge, by channel."""

    leaves: list[Leaf]
    own: list[torch.Tensor]
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]
    received: dict[str, torch.Tensor] = field(default_factory=dict)


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
        self.retains = False  # some M's target needs this component's graphs after its backward pass
        self.chains: dict[tuple[str, int], Chain] = {}
        self._boots: dict[int, torch.Tensor] = {}  # id(leaf.h) -> J^T (applied g_hats) before the backward
        self.taps: dict[tuple[str, str], OutputTap] = {}  # (agent, loss port) -> its output (DFA's error)
        self._in_sg = {i.spec.key: i.spec.interface.sg for a in members for i in a.inboxes if i.dni}
        self.splits = any(needs_split(p) for p in self._in_sg.values())  # else: the plain target path only
        self.sender_steps = any(getattr(o.sg, "params", None) is not None
                                and getattr(o.sg.params, "sender_step", "optimizer") != "optimizer"
                                for a in members for o in a.outboxes if o.dni)
        for a in members:
            self._wire_targets(a)
            self._wire_mixed(a)
            self._wire_feedback(a)
        self.dfa = [o.sg for a in members for o in a.outboxes if isinstance(o.sg, DirectFeedback)]
        # sg.kind fa in-edges: (member, channel, the tap on its first linear layer, that layer)
        self.fa_in: list[tuple[Agent, str, LayerTap, torch.nn.Linear]] = []
        for a in members:
            self._wire_alignment(a)

    def _wire_alignment(self, a: Agent) -> None:
        """A receiver with an ``fa`` in-edge: tap its first linear layer (FA's delta and the layer's input)."""
        for i in a.inboxes:
            if not (i.dni and getattr(i.spec.interface.sg, "kind", None) == "fa"):
                continue
            layer = None if a.recurrent else first_linear(a.body)
            if layer is None:
                raise ScenarioError("sg.kind fa replaces the receiver's first linear layer in its backward pass: "
                                    "the receiver needs a feed-forward model (mlp or linear)", f"agents.{a.name}.model")
            if a.spec.update.unroll != 1:
                raise ScenarioError("sg.kind fa needs a receiver updating every batch: set update.unroll 1",
                                    f"agents.{a.name}.update.unroll")
            if i.spec.latency != 0:
                raise ScenarioError("sg.kind fa is locked backward (the receiver's backward pass of the same tick): "
                                    "set latency: 0 (or use sg.kind mlp or dfa)", f"edges.{i.spec.key}.latency")
            self.fa_in.append((a, i.spec.key, tap_layer(layer), layer))

    def fill_alignment(self, senders: dict[str, FeedbackAlignment]) -> None:
        """Before the backward pass (members last to first): each ``fa`` in-edge's g_hat, through the member's
        backward with its first layer's weights replaced by the edge's fixed B (corporation/feedback.py)."""
        w = self.window
        for a, channel, layer_tap, layer in reversed(self.fa_in):
            fa = senders.get(channel)
            leaves = [leaf for leaf in w.leaves.get(a.name, []) if leaf.channel == channel]
            terms = list(w.losses.get(a.name, [])) + [(h * g).sum() for h, g, _ in w.pairs.get(a.name, [])]
            if fa is None or not leaves or not terms or layer_tap.out is None:
                continue
            objective = sum(terms)
            for leaf in leaves:
                fa.fill(leaf.batch_id, aligned_feedback(objective, layer_tap, leaf.h, fa.feedback(layer.weight.shape)))

    def _wire_feedback(self, a: Agent) -> None:
        """An output agent with a ``dfa`` in-edge: tap what it feeds each loss port (the output error)."""
        if not any(i.dni and getattr(i.spec.interface.sg, "kind", None) == "dfa" for i in a.inboxes):
            return
        if a.recurrent:
            raise ScenarioError("sg.kind dfa feeds back a feed-forward output agent's error; use mlp here",
                                f"agents.{a.name}")
        for port in a.loss_ports:
            key = head_key(TASK_PREFIX + port)
            self.taps[(a.name, TASK_PREFIX + port)] = tap(dict(a.heads.items()).get(key, a.body))

    def errors(self) -> dict[str, dict[int, torch.Tensor]]:
        """Before the backward pass: per loss port, {batch id: per-example output error B * dL/d(output)}."""
        out: dict[str, dict[int, torch.Tensor]] = {}
        for (name, port), t in self.taps.items():
            losses = self.window.losses.get(name)
            a = next(m for m in self.members if m.name == name)
            if not losses or t.out is None or not t.out.requires_grad:
                continue
            (e,) = torch.autograd.grad(sum(losses), t.out, retain_graph=True, allow_unused=True)
            if e is not None:
                out.setdefault(port, {})[a.last_id] = e * e.shape[0]
        return out

    @staticmethod
    def _wire_mixed(a: Agent) -> None:
        """bp_lambda out-edges: M is built at the first send (its size is the message's); sender and
        receiver must act on the same clock (the true gradient comes through the receiver's backward)."""
        for o in a.outboxes:
            if not o.mixed:
                continue
            if o.spec.latency != 0:
                raise ScenarioError("bp_lambda mixes in the true gradient of the same tick: set latency: 0 (or use "
                                    "kind: dni)", f"edges.{o.spec.key}.latency")
            if o.receiver_clock != a.spec.clock:
                raise ScenarioError(f"bp_lambda needs {a.name} and {o.dst} on the same clock; use kind: dni",
                                    f"edges.{o.spec.key}.interface.kind")
            iface = o.spec.interface
            factory = SYNTHESIZERS.get(iface.sg.kind).factory
            o.set_builder(functools.partial(_build_sg, factory, iface.sg, a))

    def _wire_targets(self, a: Agent) -> None:
        """Keep graphs (and relay targets) for members whose in-edge or state M has a chained target."""
        keep = KeepSaved()
        if a.state_sg is not None and chained(a.state_sg.params):
            keep.attach(a.body)
            self.retains = True
        if any(i.dni and chained(i.spec.interface.sg) for i in a.inboxes):
            if a.recurrent or a.spec.update.unroll != 1:
                raise ScenarioError("an edge's lambda / exact target needs a feed-forward receiver with "
                                    "update.unroll 1; use target: bootstrap here", f"agents.{a.name}.update.unroll")
            keep.attach(a.body)
            for head in a.heads.values():
                keep.attach(head)
            self.retains = True
            for o in a.outboxes:
                if o.dni:
                    o.set_relay(functools.partial(self.relay, a.name))

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
        if self.splits:
            self._split(w)
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
            chain: list[tuple[Leaf, torch.Tensor]] = []
            for leaf in w.leaves.get(a.name, []):
                boot = self._boots.pop(id(leaf.h), None) if self.splits else None
                if boot is not None:  # sg.target other than plain bootstrap: split the leaf gradient
                    grad = leaf.h.grad if leaf.h.grad is not None else torch.zeros_like(leaf.h)
                    own = grad - boot
                    params = self._sg_params(a, leaf)
                    if chained(params) and self._edge_pairs(a):
                        chain.append((leaf, own))
                        continue
                    gamma, _ = mixing(params)
                    self._post(leaf, (own + gamma * boot) * leaf.h.shape[0], tick)
                elif leaf.h.grad is not None:  # per-example target: B * dL/dh
                    target = GradientMessage(leaf.batch_id, leaf.h.grad * leaf.h.shape[0], tick)
                    self.transport.post("target", leaf.channel, target, tick + leaf.back_latency)
            if chain:
                self._hold(a, chain)
            for o in a.outboxes:
                if o.mixed and o.true_targets:
                    o.train_true(tick)
            a.after_backward(tick)
        out = []
        for a, ok in zip(self.members, go):
            optimizer = a.optimizer_for(tick, ok)
            if optimizer is None:
                continue
            factors = self._sender_factors(a, w) if self.sender_steps else {}
            for group in optimizer.param_groups if factors else ():  # sg.sender_step (lr set afresh each update)
                group["lr"] *= factors.get("*", factors.get(group.get("part"), 1.0))
            out.append(optimizer)
        return out

    @staticmethod
    def _sender_factors(a: Agent, w: Window) -> dict[str, float]:
        """sg.sender_step r2 / snr: which parts of a member step with lr times M's factor (in [0, 1]), by
        param-group part ('*': all of them). A member whose every gradient in this window is a g_hat (no task
        loss scored in the window: a pettingzoo ``direct`` action port scores none; no locked out-edge): all
        its parameters, by the smallest factor of its gated out-edges. Otherwise only the head toward each
        gated out-edge's receiver (``heads.<dst>``), which nothing but that edge's g_hat trains."""
        factors = {head_key(o.dst): o.sg.sender_factor() for o in a.outboxes
                   if o.dni and getattr(o.sg, "params", None) is not None
                   and getattr(o.sg.params, "sender_step", "optimizer") != "optimizer"}
        if not factors:
            return {}
        if not w.losses.get(a.name) and not any(o.locked for o in a.outboxes):
            return {"*": min(factors.values())}
        return factors

    # ----- target options (sg.target, corporation/targets.py) ------------------------------------------
    def _sg_params(self, a: Agent, leaf: Leaf) -> object:
        """The sg params of the edge that ``leaf`` came in on (the sender's M)."""
        return self._in_sg[leaf.channel]

    def _edge_pairs(self, a: Agent) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The member's out-edge (h, applied g_hat) pairs of this window, by channel."""
        wheres = {f"edge {a.name} -> {o.dst}": o.channel for o in a.outboxes if o.dni}
        return {wheres[where]: (h, g) for h, g, where in self.window.pairs.get(a.name, []) if where in wheres}

    def _split(self, w: Window) -> None:
        """Before the backward pass: J^T (applied g_hats) at each leaf whose sender's M needs the
        gradient split into its own-loss and bootstrapped parts (an extra VJP; graphs kept)."""
        for a in self.members:
            leaves = [leaf for leaf in w.leaves.get(a.name, []) if needs_split(self._sg_params(a, leaf))]
            if not leaves:
                continue
            pairs = w.pairs.get(a.name, [])
            boots = vjp([h for h, _, _ in pairs], [leaf.h for leaf in leaves], [g for _, g, _ in pairs])
            for leaf, boot in zip(leaves, boots):
                self._boots[id(leaf.h)] = boot

    def _post(self, leaf: Leaf, target: torch.Tensor, tick: int) -> None:
        msg = GradientMessage(leaf.batch_id, target, tick)
        self.transport.post("target", leaf.channel, msg, tick + leaf.back_latency)

    def _hold(self, a: Agent, chain: list[tuple[Leaf, torch.Tensor]]) -> None:
        """Keep this batch's graph until every out-edge M of ``a`` got its target for it."""
        batch_id = chain[0][0].batch_id
        self.chains[(a.name, batch_id)] = Chain([leaf for leaf, _ in chain], [own for _, own in chain],
                                                self._edge_pairs(a))
        if len(self.chains) > 256:  # targets that never come: forget the oldest
            del self.chains[min(self.chains, key=lambda k: k[1])]

    def relay(self, name: str, channel: str, grad: GradientMessage, tick: int) -> None:
        """An out-edge M of member ``name`` got its target ``grad``: when all have, the held batch's
        upstream targets are ``(l + gamma J^T [(1 - lam) g_hat + lam G]) * B`` (targets.py)."""
        chain = self.chains.get((name, grad.batch_id))
        if chain is None or channel not in chain.pairs:
            return
        chain.received[channel] = grad.g
        if len(chain.received) < len(chain.pairs):
            return
        del self.chains[(name, grad.batch_id)]
        a = next(m for m in self.members if m.name == name)
        hs = [h for h, _ in chain.pairs.values()]
        for leaf, own in zip(chain.leaves, chain.own):
            gamma, lam = mixing(self._sg_params(a, leaf))
            vs = [(1.0 - lam) * g + lam * chain.received[c] / h.shape[0] for c, (h, g) in chain.pairs.items()]
            back = vjp(hs, [leaf.h], vs)[0]
            self._post(leaf, (own + gamma * back) * leaf.h.shape[0], tick)

    def close(self, tick: int, go: list[bool]) -> None:
        """After the optimizer steps: each member starts a new window."""
        self.window = Window()
        self.updates += 1
        for a, ok in zip(self.members, go):
            a.finish_window(tick, ok, stepped=True)
            a.detach_locked()
            if self.trace is not None:
                self.trace(tick, "update" if ok else "skip", a.name, None)


def _build_sg(factory: Callable[..., Any], params: Any, a: Agent, size: int) -> Any:
    """A bp_lambda edge's M, drawn from the sender's generator (as wiring builds a dni edge's M)."""
    return factory(params, size, 0, a.generator, a.device, a.spec.optimizer)


def backward_together(components: list[Component], tick: int) -> None:
    """Update several due components with ONE autograd call: their graphs are disjoint (a ``dni`` edge
    detaches, only ``backprop`` edges join agents, and those are inside a component), so this is the same
    computation as one backward per component, with less overhead; likewise the members' optimizers step
    together (:func:`corporation.optim.step_together`)."""
    prepared = [(c, c.prepare(tick)) for c in components]
    if any(c.dfa for c in components):  # DFA: the output errors of this tick, fed back before the backward
        errors: dict[str, dict[int, torch.Tensor]] = {}
        for c in components:
            for port, es in c.errors().items():
                errors.setdefault(port, {}).update(es)
        for c in components:
            for dfa in c.dfa:
                for batch_id in list(dfa.pending):
                    if batch_id in errors.get(dfa.port, {}):
                        dfa.fill(batch_id, errors[dfa.port][batch_id])
    if any(c.fa_in for c in components):  # FA: top-down through the receivers, before the backward
        senders = {o.channel: o.sg for c in components for a in c.members for o in a.outboxes
                   if isinstance(o.sg, FeedbackAlignment)}
        for c in reversed(components):
            c.fill_alignment(senders)
    bad = first_nonfinite([x for _, (_, named, _, _) in prepared for x in named])
    if bad is not None:
        raise Diverged(tick, f"non-finite {bad}")
    tensors = [x for _, (_, _, ts, _) in prepared for x in ts]
    grads = [g for _, (_, _, _, gs) in prepared for g in gs]
    if tensors:
        torch.autograd.backward(tensors, grads, retain_graph=any(c.retains for c in components) or None)
    optimizers = [o for c, (go, _, _, _) in prepared for o in c.after_backward(tick, go)]
    step_together(optimizers)
    for c, (go, _, _, _) in prepared:
        c.close(tick, go)
