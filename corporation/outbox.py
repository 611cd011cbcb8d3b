"""The sender's half of an edge: the send schedule and, on a ``dni`` edge, the synthetic gradient model M.

An :class:`Outbox` belongs to the sending agent; only its own methods change it. It posts the sender's
messages on the transport (at the ticks the schedule allows: a ``sample`` edge posts only when the receiver
will read, worked out once from the receiver's clock), asks M for g_hat, and trains M when a target for one
of its messages comes back. It never touches the receiver's :class:`~corporation.inbox.Inbox`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .clock import fires
from .interfaces import MixGradient, SyntheticGradient
from .messages import GradientMessage, Message
from .spec import ClockSpec, EdgeSpec, is_port
from .transport import LocalTransport


class Outbox:
    """The sending side of one edge ``src -> dst`` (an agent-to-agent edge or an agent-to-loss-port edge)."""

    def __init__(self, spec: EdgeSpec, transport: LocalTransport, receiver_clock: ClockSpec | None,
                 sg: SyntheticGradient | None = None, synthetic_input: bool = False):
        self.spec = spec
        self.transport = transport
        self.sg = sg
        self.channel = spec.key
        self.mixed = spec.interface is not None and spec.interface.kind == "bp_lambda"
        self.locked = spec.interface is not None and spec.interface.kind in ("backprop", "bp_lambda")
        self.receiver_clock = receiver_clock
        self.build_sg: Callable[[int], SyntheticGradient] | None = None  # bp_lambda: M, built at the first send
        self.true_targets: list[tuple[int, torch.Tensor]] = []  # bp_lambda: true gradients from the backward
        self.dni = spec.interface is not None and spec.interface.kind == "dni"
        self.to_task = is_port(spec.dst)
        # a sampled edge's schedule: the receiver's clock, read at delivery (at the send tick itself with a
        # synthetic input, since the receiver then processes the id of its own tick at once)
        self._sample_clock = receiver_clock if spec.sample and receiver_clock is not None else None
        self._sample_delay = 0 if synthetic_input else spec.latency
        self.device: torch.device | None = None  # the receiver's device (messages move there)
        self.targets: list[tuple[GradientMessage, int]] = []  # received this tick, not yet trained on
        self.relay: Callable[[str, GradientMessage, int], None] | None = None  # the sender's chained targets
        self.history = getattr(spec.interface.sg, "history", 0) if self.dni else 0
        self.past: list[torch.Tensor] = []  # sg.history: the last messages posted here, most recent first

    def set_relay(self, relay: Callable[[str, GradientMessage, int], None]) -> None:
        """Also hand every target to ``relay(channel, target, tick)``: the sender's component builds its own
        in-edges' lambda / exact targets from them (:mod:`corporation.targets`)."""
        self.relay = relay

    def deliver_to(self, device: torch.device) -> None:
        """The receiver's device: messages are moved there when sent."""
        self.device = device

    @property
    def dst(self) -> str:
        return self.spec.dst

    def posts_at(self, tick: int) -> bool:
        """Whether the sender posts on this edge at ``tick`` (always, unless the edge is ``sample``)."""
        return self._sample_clock is None or fires(self._sample_clock, tick + self._sample_delay)

    def set_builder(self, build: Callable[[int], SyntheticGradient]) -> None:
        """bp_lambda: how to build M for a message size (at the first send; drawn from the sender's stream)."""
        self.build_sg = build

    def _mix(self, msg: Message, tick: int) -> Message:
        """bp_lambda: the message carries its graph through :class:`MixGradient` (lam true + (1 - lam) g_hat)."""
        if self.sg is None:
            self.sg = self.build_sg(msg.h.shape[1])
        g = self.sg.predict(msg.batch_id, msg.h, None, tick)
        h = MixGradient.apply(msg.h, g, self.spec.interface.lam, self._true_target, msg.batch_id)
        return Message(msg.batch_id, h, msg.sent, msg.start, msg.end, msg.reset, msg.window)

    def _true_target(self, batch_id: int, target: torch.Tensor) -> None:
        self.true_targets.append((batch_id, target))

    def train_true(self, tick: int) -> None:
        """bp_lambda: one regression step of M on each true gradient the backward pass produced."""
        pending, self.true_targets = self.true_targets, []
        for batch_id, target in pending:
            self.sg.train_on(batch_id, target, tick)

    def send(self, msg: Message, tick: int) -> None:
        """Post ``msg`` (its graph kept only on a locked edge) for delivery after the edge's latency."""
        if self.mixed:
            msg = self._mix(msg, tick)
        if self.device is not None and msg.h.device != self.device:
            msg = Message(msg.batch_id, msg.h.to(self.device), msg.sent, msg.start, msg.end, msg.reset, msg.window)
        self.transport.post("message", self.channel, msg, tick + self.spec.latency)

    def g_hat(self, batch_id: int, h: torch.Tensor, context: torch.Tensor | None, tick: int,
              start: bool = False, reset: torch.Tensor | None = None) -> torch.Tensor:
        """The gradient to apply to message ``h`` (B, n) now (M's prediction, recorded for its later target).
        With ``sg.history`` K, M's context (B, c) gains the edge's K previous messages (B, K n): ``start`` (a new
        sequence) clears them, ``reset`` (B,) bool clears the rows whose episode restarted; then h joins them."""
        if self.history:
            context = self._with_past(h.detach(), context, start, reset)
        return self.sg.predict(batch_id, h, context, tick)

    def _with_past(self, h: torch.Tensor, context: torch.Tensor | None, start: bool,
                   reset: torch.Tensor | None) -> torch.Tensor:
        if start or not self.past or self.past[0].shape != h.shape:
            self.past = [torch.zeros_like(h)] * self.history
        elif reset is not None:
            keep = (~reset.to(h.device)).to(h.dtype).unsqueeze(1)
            self.past = [p * keep for p in self.past]
        full = torch.cat(([] if context is None else [context]) + self.past, dim=1)
        self.past = [h, *self.past[:-1]]
        return full

    def on_target(self, grad: GradientMessage, tick: int) -> None:
        """A target for one of this edge's messages came back at ``tick``: one regression step of M."""
        self.sg.train_on(grad.batch_id, grad.g, tick)

    def receive_target(self, grad: GradientMessage, tick: int) -> None:
        """Keep a target until :meth:`train` (the scheduler trains every M of a tick together)."""
        self.targets.append((grad, tick))

    def train(self) -> torch.Tensor | None:
        """Train M on the targets received: all but the last one at once (each step changes M); the last
        one's loss is returned for the caller to backpropagate and step (several Ms together), then call
        ``sg.stepped()``. A synthesizer without ``regression_loss`` trains on each target itself."""
        pending, self.targets = self.targets, []
        if self.relay is not None:
            for grad, tick in pending:
                self.relay(self.channel, grad, tick)
        split = hasattr(self.sg, "regression_loss") and hasattr(self.sg, "stepped")
        for i, (grad, tick) in enumerate(pending):
            if not split:
                self.sg.train_on(grad.batch_id, grad.g, tick)
                continue
            loss = self.sg.regression_loss(grad.batch_id, grad.g, tick)
            if loss is None:
                continue
            if i == len(pending) - 1:
                return loss
            loss.backward()
            self.sg.optimizer.step()
            self.sg.stepped()
        return None
