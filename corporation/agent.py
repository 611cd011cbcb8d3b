"""An agent: one network with its own parameters, optimizer, clock, random stream and (for RNNs) state.

The agent only sees its own halves of its edges: its inboxes (messages in, I), its outboxes (messages out,
M), the task ports' contexts it was sent, and the loss ports beside it. At its ticks it picks the oldest batch
id whose inputs are all there (a ``hold`` edge, an edge closing a cycle or a synthetic input never blocks),
runs its body, posts messages, and for each outgoing ``dni`` edge asks M for g_hat. What it must
backpropagate (losses, (h, g_hat) pairs, detached ``dni`` inputs whose gradients become the senders' M
targets) goes to its :class:`~corporation.component.Component`, which runs the update.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .aux_head import AuxHead
from .clock import fires
from .component import Leaf
from .inbox import ContextInbox, Inbox
from .messages import Message
from .optim import clear_grads, lr_at, make_optimizer, set_lr
from .outbox import Outbox
from .spec import TASK_PREFIX, AgentSpec, head_key, is_port
from .targets import StateTargets, needs_split

if TYPE_CHECKING:
    from .tasks.base import PortLearner


def tree_detach(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(tree_detach(s) for s in state)
    return state


class Agent:
    """One network and its halves of the edges: inboxes (what it reads), outboxes (what it sends, with M),
    the task ports' contexts it needs, and the loss ports it feeds. The scheduler calls ``act`` at the
    agent's ticks; what the agent must backpropagate goes to its :class:`~corporation.component.Component`."""

    def __init__(self, name: str, spec: AgentSpec, body: nn.Module, heads: nn.ModuleDict,
                 generator: torch.Generator, horizon: int = 2):
        self.name = name
        self.spec = spec
        self.body = body
        self.heads = heads
        self.generator = generator
        self.horizon = horizon  # ticks of contexts kept behind the agent's progress
        self.recurrent = bool(getattr(body, "recurrent", False))
        # one param group per part (body, then each head: its key in group["part"]), so that a part can step
        # with its own lr factor (sg.sender_step r2 on a head only g_hat trains); same math as one group
        groups = [{"params": ps, "part": part}
                  for part, ps in [("body", list(body.parameters())),
                                   *((k, list(h.parameters())) for k, h in heads.items())] if ps]
        self.optimizer = make_optimizer(spec.optimizer, groups) if groups else None
        self.inboxes: list[Inbox] = []  # sorted by source: this fixes the input concatenation order
        self.outboxes: list[Outbox] = []  # sorted by destination
        self.port_contexts: dict[str, ContextInbox] = {}  # task port -> its contexts (M's or I's)
        self.loss_ports: dict[str, PortLearner] = {}  # task port -> what scores this agent's outputs there
        self.component: Any = None  # set by the Component this agent belongs to
        self.live: list[int] = []  # emitted ids this agent may still process (fed when it needs them)
        self.trace: Callable[..., None] | None = None
        self.state: Any = None
        self.state_sg = None  # M on the carried state (state.kind: dni), set at wiring (set_state_sg)
        self.state_targets: StateTargets | None = None  # sg.target other than plain bootstrap (lazy)
        self.window_leaf: tuple[torch.Tensor, ...] | None = None  # state at the window start, a leaf
        self.window_fresh = False  # the window began with a new sequence: the last boundary had no future
        self.boundary = 0  # window boundaries passed: the ids of the state M's records
        self.aux: AuxHead | None = None  # DNI + Aux (state.aux): predicts the next boundary's g_hat
        if spec.state.aux and self.recurrent:
            self.aux = AuxHead(body, spec)
        self.last_end = False
        self.eval_state: Any = None
        self.last_id = -1
        self.acted = 0  # own ticks since the last update
        self.due = False
        self.counts = {"acted": 0, "updates": 0, "skipped": 0, "idle": 0, "synthetic_inputs": 0}

    # ----- wiring (by the engine, at construction) ---------------------------------------------------
    def place(self, device: torch.device) -> None:
        """The device this agent's modules live on (messages it reads are moved there by their senders)."""
        self.device = device

    def set_state_sg(self, state_sg: Any) -> None:
        """M on the carried state (``state.kind: dni``)."""
        self.state_sg = state_sg

    def set_trace(self, trace: Callable[..., None] | None) -> None:
        self.trace = trace

    def add_inbox(self, inbox: Inbox) -> None:
        self.inboxes.append(inbox)

    def add_outbox(self, outbox: Outbox) -> None:
        self.outboxes.append(outbox)

    def add_port_context(self, port: str) -> ContextInbox:
        return self.port_contexts.setdefault(port, ContextInbox(port))

    def add_loss_port(self, port: str, learner: PortLearner) -> None:
        self.loss_ports[port] = learner

    def needs_live_ids(self) -> bool:
        """Whether the agent must be told every emitted id (it has a synthetic input or never blocks)."""
        return any(i.si is not None for i in self.inboxes) or not any(not i.hold for i in self.inboxes)

    # ----- what arrives ------------------------------------------------------------------------------
    def receive(self, inbox: Inbox, msg: Message, tick: int) -> None:
        """A message for ``inbox`` at ``tick``; a locked message sent before the component's last update has
        a spent graph: it arrives detached."""
        if inbox.locked and msg.window < self.component.updates:
            msg = Message(msg.batch_id, msg.h.detach(), msg.sent, msg.start, msg.end, msg.reset, msg.window)
        trained = inbox.deliver(msg, tick)
        if self.trace is not None:
            if trained is not None:
                self.trace(tick, "train_i", inbox.spec.key, msg.batch_id, trained)
            self.trace(tick, "deliver", inbox.spec.key, msg.batch_id, msg)

    def note_emitted(self, batch_id: int, tick: int) -> None:
        self.live.append(batch_id)

    def si_context(self, inbox: Inbox, batch_id: int) -> torch.Tensor | None:
        """I's context for ``batch_id`` on ``inbox``: a task port's, or another inbox's message."""
        source = inbox.spec.interface.synthetic_input.context
        if is_port(source):
            return self.port_contexts[source[len(TASK_PREFIX):]].get(batch_id)
        return next(i for i in self.inboxes if i.src == source).contexts.get(batch_id)

    # ----- picking what to process -------------------------------------------------------------------
    def pick(self) -> int | None:
        """The oldest unprocessed batch id whose every blocking input is available, else None."""
        blocking = [i for i in self.inboxes if not i.hold]
        holds = [i for i in self.inboxes if i.hold]
        if any(i.newest is None and i.si is None and not i.back_edge for i in holds):
            return None
        if not blocking:
            ids = [i.newest.batch_id for i in holds if i.newest is not None and not i.back_edge]
            if ids:
                k = max(ids)
                # a message from a worker running ahead (free mode) waits until the task emitted its id here
                return k if not self.live or k <= self.live[-1] else None
            return self.live[-1] if self.live else None
        pool: set[int] = set()
        for inbox in blocking:
            pool.update(inbox.ids_after(self.last_id))
            if inbox.si is not None:  # a sampled edge: only the ids of this agent's own ticks
                pool.update(k for k in self.live if k > self.last_id
                            and (not inbox.spec.sample or fires(self.spec.clock, k)))
        for k in sorted(pool):
            if all(k in i.messages or (i.si is not None and self.si_context(i, k) is not None) for i in blocking):
                return k
        return None

    # ----- one tick of work --------------------------------------------------------------------------
    def act(self, tick: int) -> bool:
        """Process one batch id if one is complete; returns whether the agent did any work."""
        batch_id = self.pick()
        if batch_id is None:
            self.counts["idle"] += 1
            if self.trace is not None:
                self.trace(tick, "idle", self.name, None)
            return False
        component = self.component
        inputs: list[torch.Tensor | None] = []
        first = None
        read: dict[str, Message | None] = {}  # for the trace: what was read on each edge
        for inbox in self.inboxes:
            msg = inbox.get(batch_id)
            read[inbox.spec.key] = msg
            if msg is None and inbox.si is not None:  # forward unlock: I(c) stands in for the missing message
                context = self.si_context(inbox, batch_id)
                h = inbox.si(context).detach()
                self.counts["synthetic_inputs"] += 1
                if self.trace is not None:
                    self.trace(tick, "stand_in", inbox.spec.key, batch_id, (context, h))
                target_id = batch_id
            elif msg is None:  # a back edge of a cycle before its first message: zeros (filled below)
                inputs.append(None)
                continue
            else:
                h = msg.h
                target_id = msg.batch_id
                if first is None or inbox.from_task:
                    first = msg
            if inbox.dni:  # the true gradient stops here; its value becomes the sender's M target
                h = h.detach().requires_grad_(True)
                component.add_leaf(self.name, Leaf(inbox.spec.key, inbox.spec.back_latency, target_id, h))
            inputs.append(h)
        if any(x is None for x in inputs):
            rows = next(x.shape[0] for x in inputs if x is not None)
            inputs = [x if x is not None else i.zeros(rows) for x, i in zip(inputs, self.inboxes)]
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=1)
        start = bool(first and first.start)
        end = bool(first and first.end)
        reset = first.reset if first is not None else None  # rows starting a new episode (vectorised envs)
        if self.recurrent:
            if self.state is None or start:
                self.state = self.body.init_state(x)
                self.window_fresh = self.window_fresh or self.acted == 0
            if self.state_sg is not None and self.acted == 0 and self.window_leaf is None:
                self.state = tuple(s.detach().requires_grad_(True) for s in self.state)
                self.window_leaf = self.state
            if reset is not None and not start:  # after the leaf: a reset row's old state gets zero gradient
                keep = (~reset).to(x.dtype).unsqueeze(1)
                self.state = tuple(s * keep for s in self.state)
            out, self.state = self.body(x, self.state)
            self.last_end = end
            if self.aux is not None:
                self.aux.record(self.state, start)
        else:
            out = self.body(x)
        for outbox in self.outboxes:
            if not outbox.posts_at(tick):
                continue  # a sampled edge: the receiver never reads this instant (no message, no g_hat)
            h = self.project(outbox.dst, out)
            if outbox.to_task:
                if self.trace is not None:
                    self.trace(tick, "output", outbox.spec.key, batch_id, h.detach())
                loss = self.loss_ports[outbox.dst[len(TASK_PREFIX):]].score(batch_id, h)
                if loss is not None:
                    component.add_loss(self.name, loss)
                continue
            msg = Message(batch_id, h if outbox.locked else h.detach(), tick, start, end, reset, component.updates)
            outbox.send(msg, tick)
            if self.trace is not None:
                self.trace(tick, "send", outbox.spec.key, batch_id, msg)
            if outbox.dni:
                c = outbox.spec.interface.context
                ctx = self.port_contexts[c[len(TASK_PREFIX):]].get(batch_id) if c is not None else None
                component.add_pair(self.name, h, outbox.g_hat(batch_id, h, ctx, tick, start, reset),
                                   f"edge {self.name} -> {outbox.dst}")
        for inbox in self.inboxes:
            inbox.advance(batch_id)
        self.last_id = max(self.last_id, batch_id)
        self._forget()
        self.counts["acted"] += 1
        self.acted += 1
        if self.acted >= self.spec.update.unroll:
            self.due = True
        if self.trace is not None:
            self.trace(tick, "act", self.name, batch_id, read)
        return True

    def _forget(self) -> None:
        """Drop emitted ids and contexts that can no longer be used (behind this agent and behind every
        synthetic input's real messages, with a margin of ``horizon`` ticks)."""
        if len(self.live) > 1:
            keep = [k for k in self.live[:-1] if k > self.last_id]
            self.live = keep + self.live[-1:]
        for port, store in self.port_contexts.items():
            store.forget(self._context_floor(TASK_PREFIX + port))
        for inbox in self.inboxes:
            if inbox.keep_contexts:
                inbox.forget(self._context_floor(inbox.src))

    def _context_floor(self, source: str) -> int:
        users = [i.delivered for i in self.inboxes
                 if i.si is not None and i.spec.interface.synthetic_input.context == source]
        return min([self.last_id, *users]) - self.horizon

    def at_rest(self) -> bool:
        """No update window is open and no state-M target waits for later windows (their graphs cannot be
        snapshotted): nothing of this agent waits for a backward pass."""
        held = self.state_targets is not None and bool(self.state_targets.windows)  # n-step / lambda graphs
        return self.acted == 0 and not held and all(lp.at_rest() for lp in self.loss_ports.values())

    # ----- updating ----------------------------------------------------------------------------------
    def draw_update(self) -> bool:
        """Whether this due update happens (probability ``update.prob``, from the agent's own stream)."""
        p = self.spec.update.prob
        if p >= 1.0:
            return True
        if p <= 0.0:
            return False
        return bool(torch.rand((), generator=self.generator) < p)

    def close_window(self, tick: int) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
        """Before the backward pass: the synthetic gradient of all future loss on the carried state, as
        (state part, g_hat part, where) pairs for the component's backward pass."""
        if self.state_sg is None or self.state is None or self.acted == 0:
            return []
        targets = self._state_targets()
        if self.last_end and self.spec.state.zero_at_end:
            if self.aux is not None:  # the boundary's synthetic gradient is zero: that is the aux target
                self.aux.fit(None, torch.cat(self.state, dim=1), self.body, self.spec.state.aux_weight, tick)
            if targets is not None:
                targets.before_backward(self.window_leaf, self.state, None)
            return []  # the sequence ends here: no future loss, no synthetic gradient
        state = torch.cat(self.state, dim=1)
        g = self.state_sg.predict(self.boundary, state, None, tick)
        if self.aux is not None:
            self.aux.fit(self.state_sg, state, self.body, self.spec.state.aux_weight, tick)
        sg = self.state_sg.params
        if tick < sg.warmup or sg.scale == 0.0:
            if targets is not None:
                targets.before_backward(self.window_leaf, self.state, None)
            return []  # g_hat forced to zero: add nothing, so this is exactly truncated BPTT (optimizer included)
        if targets is not None:
            targets.before_backward(self.window_leaf, self.state, g)
        where = f"the carried state of '{self.name}'"
        return [(s, part, where) for s, part in zip(self.state, g.split([s.shape[1] for s in self.state], dim=1))
                if s.requires_grad]
    def after_backward(self, tick: int) -> None:
        """After the backward pass: train the state M of the previous boundary on its bootstrapped target
        (the gradient that reached this window's start state). The boundary is counted in finish_window
        (also when the update is skipped, so a skipped window's record never gets a later window's target)."""
        if self.state_sg is not None and self.window_leaf is not None:
            leaf = self.window_leaf
            if self.state_targets is not None:  # sg.target: discounted, n-step, lambda or exact
                for record, target in self.state_targets.after_backward(self.boundary - 1, leaf, self.window_fresh):
                    self.state_sg.train_on(record, target, tick)
                return
            if self.window_fresh:
                target = torch.zeros_like(torch.cat(leaf, dim=1))
            else:
                target = torch.cat([s.grad if s.grad is not None else torch.zeros_like(s) for s in leaf], dim=1)
                target = target * target.shape[0]
            self.state_sg.train_on(self.boundary - 1, target, tick)

    def _state_targets(self) -> StateTargets | None:
        """The state M's target options (None: plain bootstrap with gamma 1, computed in after_backward)."""
        if self.state_targets is None and needs_split(self.state_sg.params):
            self.state_targets = StateTargets(self.state_sg.params)
        return self.state_targets

    def optimizer_for(self, tick: int, step: bool) -> torch.optim.Optimizer | None:
        """The optimizer to step for this update (its lr set for ``tick``), or None (no step / no parameters).
        The component steps the optimizers of all its due members together."""
        if self.optimizer is None or not step:
            return None
        set_lr(self.optimizer, lr_at(self.spec.optimizer, tick))
        return self.optimizer

    def finish_window(self, tick: int, step: bool, stepped: bool = False) -> None:
        """After the component's backward (and, when ``stepped``, the optimizer step): discard the gradients,
        start a new window."""
        if self.optimizer is not None:
            if step and not stepped:
                self.optimizer_for(tick, step).step()
            clear_grads(self.optimizer)
        self.counts["updates" if step else "skipped"] += 1
        for learner in self.loss_ports.values():
            learner.window_closed()  # graphs of this window's outputs are spent
        self.acted = 0
        self.due = False
        if self.recurrent:
            self.state = tree_detach(self.state)
            self.window_leaf = None
            self.window_fresh = False
            self.boundary += 1
            if self.aux is not None:
                self.aux.states.clear()

    # ----- composition (evaluation) ------------------------------------------------------------------
    def project(self, dst: str, out: torch.Tensor) -> torch.Tensor:
        """The body output as sent to ``dst``: through the head toward ``dst`` if there is one."""
        key = head_key(dst)
        return self.heads[key](out) if key in self.heads else out

    def reset_eval_state(self) -> None:
        """Forget the evaluation's recurrent state (before a new test sequence)."""
        self.eval_state = None

    def forward_eval(self, x: torch.Tensor, start: bool = False) -> torch.Tensor:
        """The body on real inputs, with the evaluation's own recurrent state."""
        if not self.recurrent:
            return self.body(x)
        if self.eval_state is None or start:
            self.eval_state = self.body.init_state(x)
        out, self.eval_state = self.body(x, self.eval_state)
        return out

    def modules(self) -> list[nn.Module]:
        """Every module of this agent and of its edge halves (body, heads, state M, Aux, edge Ms, Is)."""
        mods: list[nn.Module] = [self.body, self.heads]
        if self.state_sg is not None:
            mods.append(self.state_sg)
        if self.aux is not None:
            mods.append(self.aux)
        mods += [o.sg for o in self.outboxes if o.sg is not None]
        mods += [i.si for i in self.inboxes if i.si is not None]
        return mods

    def detach_locked(self) -> None:
        """After the component's update: messages waiting on locked edges keep no spent graph."""
        for inbox in self.inboxes:
            if inbox.locked:
                inbox.detach_graphs()
