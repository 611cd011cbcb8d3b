"""An agent: one network with its own parameters, optimizer, clock, random stream and (for RNNs) state.

The agent only sees its links. It picks the oldest batch id whose inputs are all there (a ``hold`` edge
or a synthetic input never blocks), runs its body, posts messages, and for each outgoing ``dni`` edge asks
M for g_hat. What it must backpropagate waits in ``losses``/``grads`` until its locked component updates
(see :mod:`corporation.engine`); ``leaves`` are its detached ``dni`` inputs, whose gradients become the
targets of the senders' M.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from .clock import fires
from .interfaces import Stats
from .messages import Link, Message
from .optim import lr_at, make_optimizer, set_lr
from .spec import TASK_PREFIX, AgentSpec


class World(Protocol):
    """What an agent may ask of the engine."""

    def context(self, source: str, batch_id: int, receiver: str) -> torch.Tensor: ...

    def has_context(self, source: str, batch_id: int, receiver: str) -> bool: ...

    def live_ids(self, after: int) -> list[int]: ...

    def score(self, port: str, batch_id: int, output: torch.Tensor) -> torch.Tensor | None: ...

    def send(self, link: Link, msg: Message, tick: int) -> None: ...


def head_key(dst: str) -> str:
    """The key of the head toward ``dst`` in ``Agent.heads`` (nn.ModuleDict keys cannot hold '.')."""
    return dst.replace(".", ":")


def tree_detach(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(tree_detach(s) for s in state)
    return state


class Agent:
    def __init__(self, name: str, spec: AgentSpec, body: nn.Module, heads: nn.ModuleDict,
                 in_links: list[Link], out_links: list[Link], generator: torch.Generator):
        self.name = name
        self.spec = spec
        self.body = body
        self.heads = heads
        self.in_links = in_links
        self.out_links = out_links
        self.generator = generator
        self.recurrent = bool(getattr(body, "recurrent", False))
        params = [*body.parameters(), *heads.parameters()]
        self.optimizer = make_optimizer(spec.optimizer, params) if params else None
        self.state: Any = None
        self.state_sg = None  # M on the carried state (state.kind: dni), set by the engine
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
        self.losses: list[torch.Tensor] = []
        self.grads: list[tuple[torch.Tensor, torch.Tensor, str]] = []  # (h, g_hat to apply, where it comes from)
        self.leaves: list[tuple[Link, int, torch.Tensor]] = []
        self.counts = {"acted": 0, "updates": 0, "skipped": 0, "idle": 0, "synthetic_inputs": 0}

    # ----- picking what to process -------------------------------------------------------------------
    def _si_ready(self, link: Link, batch_id: int, world: World) -> bool:
        return link.si is not None and world.has_context(link.spec.interface.synthetic_input.context,
                                                         batch_id, self.name)

    def pick(self, world: World) -> int | None:
        """The oldest unprocessed batch id whose every blocking input is available, else None."""
        blocking = [link for link in self.in_links if not link.spec.hold]
        holds = [link for link in self.in_links if link.spec.hold]
        if any(link.newest is None and link.si is None for link in holds):
            return None
        if not blocking:
            ids = [link.newest.batch_id for link in holds if link.newest is not None]
            if ids:
                return max(ids)
            live = world.live_ids(-1)
            return live[-1] if live else None
        pool: set[int] = set()
        for link in blocking:
            pool.update(k for k in link.inbox if k > self.last_id)
            if link.si is not None:  # a sampled edge: only the ids of this agent's own ticks
                pool.update(k for k in world.live_ids(self.last_id)
                            if not link.spec.sample or fires(self.spec.clock, k))
        for k in sorted(pool):
            if all(k in link.inbox or self._si_ready(link, k, world) for link in blocking):
                return k
        return None

    # ----- one tick of work --------------------------------------------------------------------------
    def act(self, tick: int, world: World) -> bool:
        """Process one batch id if one is complete; returns whether the agent did any work."""
        batch_id = self.pick(world)
        if batch_id is None:
            self.counts["idle"] += 1
            return False
        inputs, first = [], None
        for link in self.in_links:
            msg = link.newest if link.spec.hold else link.inbox.get(batch_id)
            if msg is None:  # forward unlock: I(c) stands in for the missing message
                ctx = world.context(link.spec.interface.synthetic_input.context, batch_id, self.name)
                h = link.si(ctx).detach()
                self.counts["synthetic_inputs"] += 1
            else:
                h = msg.h
                if first is None or link.from_task:
                    first = msg
            if link.dni:  # the true gradient stops here; its value becomes the sender's M target
                h = h.detach().requires_grad_(True)
                self.leaves.append((link, batch_id, h))
            inputs.append(h)
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
        for link in self.out_links:
            if not link.posts_at(tick):
                continue  # a sampled edge: the receiver never reads this instant (no message, no g_hat)
            h = self.project(link.dst, out)
            if link.to_task:
                loss = world.score(link.dst[len(TASK_PREFIX):], batch_id, h)
                if loss is not None:
                    self.losses.append(loss)
                continue
            world.send(link, Message(batch_id, h if link.locked else h.detach(), tick, start, end, reset),
                       tick)
            if link.dni:
                c = link.spec.interface.context
                ctx = world.context(c, batch_id, self.name) if c is not None else None
                self.grads.append((h, link.sg.predict(batch_id, h, ctx, tick), f"edge {link.src} -> {link.dst}"))
        for link in self.in_links:
            if not link.spec.hold:
                link.drop_before(batch_id + 1)
        self.last_id = max(self.last_id, batch_id)
        self.counts["acted"] += 1
        self.acted += 1
        if self.acted >= self.spec.update.unroll:
            self.due = True
        return True

    def at_rest(self) -> bool:
        """No update window is open: nothing of this agent waits for a backward pass."""
        return self.acted == 0 and not (self.losses or self.grads or self.leaves)

    # ----- updating ----------------------------------------------------------------------------------
    def draw_update(self) -> bool:
        """Whether this due update happens (probability ``update.prob``, from the agent's own stream)."""
        p = self.spec.update.prob
        if p >= 1.0:
            return True
        if p <= 0.0:
            return False
        return bool(torch.rand((), generator=self.generator) < p)

    def close_window(self, tick: int) -> None:
        """Before the backward pass: the synthetic gradient of all future loss on the carried state."""
        if self.state_sg is None or self.state is None or self.acted == 0:
            return
        if self.last_end and self.spec.state.zero_at_end:
            if self.aux is not None:  # the boundary's synthetic gradient is zero: that is the aux target
                self.aux.fit(None, torch.cat(self.state, dim=1), self.body, self.spec.state.aux_weight, tick)
            return  # the sequence ends here: no future loss, no synthetic gradient
        state = torch.cat(self.state, dim=1)
        g = self.state_sg.predict(self.boundary, state, None, tick)
        if self.aux is not None:
            self.aux.fit(self.state_sg, state, self.body, self.spec.state.aux_weight, tick)
        sg = self.state_sg.params
        if tick < sg.warmup or sg.scale == 0.0:
            return  # g_hat forced to zero: add nothing, so this is exactly truncated BPTT (optimizer included)
        for s, part in zip(self.state, g.split([s.shape[1] for s in self.state], dim=1)):
            if s.requires_grad:
                self.grads.append((s, part, f"the carried state of '{self.name}'"))

    def after_backward(self, tick: int) -> None:
        """After the backward pass: train the state M of the previous boundary on its bootstrapped target
        (the gradient that reached this window's start state). The boundary is counted in finish_window
        (also when the update is skipped, so a skipped window's record never gets a later window's target)."""
        if self.state_sg is not None and self.window_leaf is not None:
            leaf = self.window_leaf
            if self.window_fresh:
                target = torch.zeros_like(torch.cat(leaf, dim=1))
            else:
                target = torch.cat([s.grad if s.grad is not None else torch.zeros_like(s) for s in leaf], dim=1)
                target = target * target.shape[0]
            self.state_sg.train_on(self.boundary - 1, target, tick)

    def finish_window(self, tick: int, step: bool) -> None:
        """After the component's backward: step (or discard the gradients), start a new window."""
        if self.optimizer is not None:
            if step:
                set_lr(self.optimizer, lr_at(self.spec.optimizer, tick))
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.counts["updates" if step else "skipped"] += 1
        self.losses.clear()
        self.grads.clear()
        self.leaves.clear()
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

    def forward_eval(self, x: torch.Tensor, start: bool = False) -> torch.Tensor:
        """The body on real inputs, with the evaluation's own recurrent state."""
        if not self.recurrent:
            return self.body(x)
        if self.eval_state is None or start:
            self.eval_state = self.body.init_state(x)
        out, self.eval_state = self.body(x, self.eval_state)
        return out

    def modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = [self.body, self.heads]
        if self.state_sg is not None:
            mods.append(self.state_sg)
        if self.aux is not None:
            mods.append(self.aux)
        for link in self.out_links:
            if link.sg is not None:
                mods.append(link.sg)
        for link in self.in_links:
            if link.si is not None:
                mods.append(link.si)
        return mods


class AuxHead(nn.Module):
    """DNI + Aux: a zero-initialised linear head A that predicts, from each step i of the window (steps after
    a sequence start only), the synthetic gradient M(s_end) of the window's END boundary (zero where the
    sequence ends there): "the synthetic gradient T steps ahead". A reads the step's output h_i, or with
    ``state.aux_input: state`` its whole carried state s_i (for an LSTM the concatenated (h, c)).
    The regression ``aux_weight * mean_i ||A(h_i) - M(s_end)||^2`` (summed over units,
    batch mean; the target is M's raw per-example output, detached) is an auxiliary loss only: it trains A
    and this agent's recurrent body, its value is never used, and its gradient never reaches the
    window-start state, so the state M's target stays exactly the bootstrapped one. See docs/rnn.md."""

    def __init__(self, body: nn.Module, spec: AgentSpec):
        super().__init__()
        size = body.state_size()
        self.from_h = spec.state.aux_input == "h"
        with torch.random.fork_rng(devices=[]):
            self.net = nn.Linear(body.hidden if self.from_h else size, size)
        with torch.no_grad():  # zero-initialised (like M): no aux gradient reaches the core until A learns
            self.net.weight.zero_()
            self.net.bias.zero_()
        device = next(body.parameters()).device
        self.net.to(device)
        self.optimizer = make_optimizer(spec.state.sg.optimizer or spec.optimizer, self.net.parameters())
        self.states: list[torch.Tensor] = []
        self.stats = Stats(device)

    def record(self, state: tuple[torch.Tensor, ...], start: bool) -> None:
        """Keep what A reads of this step (a sequence start forgets the old sequence's steps)."""
        if start:
            self.states.clear()
        self.states.append(state[0] if self.from_h else torch.cat(state, dim=1))

    def fit(self, sg: nn.Module | None, end_state: torch.Tensor, body: nn.Module, weight: float,
            tick: int) -> None:
        """Regress A(s_i) on the boundary's g_hat; accumulate the body's gradient; step A at once."""
        if not self.states:
            return
        with torch.no_grad():
            target = torch.zeros_like(end_state) if sg is None else sg(end_state.detach(), None)
        states = torch.stack(self.states)  # (steps, B, S)
        pred = self.net(states)
        loss = ((pred - target) ** 2).sum(dim=2).mean()
        params = [p for p in body.parameters() if p.requires_grad]
        mine = list(self.net.parameters())
        grads = torch.autograd.grad(weight * loss, params + mine, retain_graph=True, allow_unused=True)
        for p, g in zip(params + mine, grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.stats.add(loss.detach(), pred[-1].detach(), target, 0)
