"""Messages and links: what travels on an edge, when it is delivered, and what waits in the inbox."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .clock import fires
from .errors import CorporationError
from .interfaces import SyntheticGradient, SyntheticInput
from .spec import ClockSpec, EdgeSpec, is_port

INBOX_LIMIT = 2048


@dataclass
class Message:
    """An activation ``h`` about batch ``batch_id`` (the tick the task emitted that input), sent at ``sent``.
    On a ``backprop`` edge ``h`` keeps its autograd graph; on a ``dni`` edge it is detached."""

    batch_id: int
    h: torch.Tensor
    sent: int
    start: bool = False
    end: bool = False
    reset: torch.Tensor | None = None  # bool per row: that row's episode starts here (see Emission.reset)


@dataclass
class GradientMessage:
    """A target for the sender's M: the (per-example) gradient w.r.t. the message of ``batch_id``."""

    batch_id: int
    g: torch.Tensor
    sent: int


@dataclass
class Link:
    """Runtime of one edge: messages in flight and delivered, gradients in flight, and the DNI models
    (M on the sender's side, I on the receiver's side)."""

    spec: EdgeSpec
    sg: SyntheticGradient | None = None
    si: SyntheticInput | None = None
    in_flight: list[tuple[int, Message]] = field(default_factory=list)
    inbox: dict[int, Message] = field(default_factory=dict)
    newest: Message | None = None
    grads_in_flight: list[tuple[int, GradientMessage]] = field(default_factory=list)
    clock: ClockSpec | None = None  # the receiving agent's clock (set by the engine; None for task ports)

    @property
    def src(self) -> str:
        return self.spec.src

    @property
    def dst(self) -> str:
        return self.spec.dst

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def from_task(self) -> bool:
        return is_port(self.spec.src)

    @property
    def to_task(self) -> bool:
        return is_port(self.spec.dst)

    @property
    def locked(self) -> bool:
        return self.spec.interface is not None and self.spec.interface.kind == "backprop"

    @property
    def dni(self) -> bool:
        return self.spec.interface is not None and self.spec.interface.kind == "dni"

    def posts_at(self, tick: int) -> bool:
        """Whether the sender posts on this edge at ``tick``: always, unless the edge is ``sample``; then
        only when the receiver's clock fires at delivery (at ``tick`` itself with a synthetic input, since
        the receiver then processes the id of its own tick at once)."""
        if not self.spec.sample or self.clock is None:
            return True
        return fires(self.clock, tick if self.si is not None else tick + self.spec.latency)

    def deliver(self, msg: Message) -> None:
        if self.spec.hold:
            self.inbox.clear()
        self.inbox[msg.batch_id] = msg
        if self.newest is None or msg.batch_id >= self.newest.batch_id:
            self.newest = msg
        if len(self.inbox) > INBOX_LIMIT:
            raise CorporationError(
                f"agent '{self.dst}' falls behind edge {self.src} -> {self.dst}: {len(self.inbox)} messages "
                "wait unread; set 'hold: true' on that edge or give the receiver a faster clock")

    def due(self, tick: int) -> list[Message]:
        """Messages whose delivery tick has come (in send order); they leave the flight list."""
        if not self.in_flight:
            return []
        ready = [m for d, m in self.in_flight if d <= tick]
        self.in_flight = [(d, m) for d, m in self.in_flight if d > tick]
        return ready

    def post_gradient(self, grad: GradientMessage, tick: int) -> None:
        self.grads_in_flight.append((tick + self.spec.back_latency, grad))

    def due_gradients(self, tick: int) -> list[GradientMessage]:
        if not self.grads_in_flight:
            return []
        ready = [g for d, g in self.grads_in_flight if d <= tick]
        self.grads_in_flight = [(d, g) for d, g in self.grads_in_flight if d > tick]
        return ready

    def drop_before(self, batch_id: int) -> None:
        """Forget delivered messages older than ``batch_id`` (a hold edge keeps its newest)."""
        for k in [k for k in self.inbox if k < batch_id]:
            if not (self.spec.hold and self.inbox[k] is self.newest):
                del self.inbox[k]

    def detach_graphs(self) -> None:
        """Cut the autograd graph of messages still waiting on a locked edge (after an update)."""
        for k, m in self.inbox.items():
            self.inbox[k] = Message(m.batch_id, m.h.detach(), m.sent, m.start, m.end, m.reset)
        self.in_flight = [(d, Message(m.batch_id, m.h.detach(), m.sent, m.start, m.end, m.reset))
                          for d, m in self.in_flight]
        m = self.newest
        if m is not None:  # the newest may have left the inbox already: its graph is spent all the same
            self.newest = self.inbox.get(m.batch_id) or Message(m.batch_id, m.h.detach(), m.sent, m.start, m.end,
                                                                 m.reset)
