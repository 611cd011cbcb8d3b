"""The receiver's half of an edge: delivered messages, the newest one, the synthetic input model I.

An :class:`Inbox` belongs to the receiving agent; only its own methods change it. It keeps the messages
delivered on one edge by batch id until its receiver has processed them (``advance``), the newest message
(for ``hold`` edges and cycles), and, when the edge has a synthetic input, I and what trains it. It may also
keep the messages it received as *contexts* for another edge's I (``keep_contexts``): they stay until
``forget`` says they are too old to meet I's late target. A :class:`ContextInbox` does the same for a task
port's context (e.g. the one-hot label of cDNI), posted by the task side at every emission.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import CorporationError
from .interfaces import SyntheticInput
from .messages import Message
from .spec import EdgeSpec, is_port

INBOX_LIMIT = 2048  # messages waiting unread on one edge: more means the receiver falls behind (an error)


class Inbox:
    """Messages of one edge ``src -> dst`` as its receiver sees them."""

    def __init__(self, spec: EdgeSpec, size: int, device: torch.device, si: SyntheticInput | None = None,
                 back_edge: bool = False):
        self.spec = spec
        self.size = size
        self.device = device
        self.si = si
        self.locked = spec.interface is not None and spec.interface.kind == "backprop"
        self.dni = spec.interface is not None and spec.interface.kind == "dni"
        self.from_task = is_port(spec.src)
        self.delivered = -1  # the newest batch id delivered (messages come in id order)
        self.hold = spec.hold or back_edge  # a back edge of a cycle reads the newest message, never blocks
        self.back_edge = back_edge
        self.messages: dict[int, Message] = {}
        self.newest: Message | None = None
        self.keep_contexts = False
        self.contexts: dict[int, torch.Tensor] = {}  # batch id -> h, as context of another edge's I
        self.last_id = -1  # how far the receiver has got
        # set by the receiver: I's context for a batch id (None when it is not there yet)
        self.si_context: Callable[[int], torch.Tensor | None] | None = None  # see use_si_context

    def zeros(self, rows: int) -> torch.Tensor:
        """The message a back edge reads before its first one arrives."""
        return torch.zeros(rows, self.size, device=self.device)

    @property
    def src(self) -> str:
        return self.spec.src

    def use_si_context(self, context: Callable[[int], torch.Tensor | None]) -> None:
        """Where I's context for a batch id comes from (the receiver's task-port contexts or another inbox)."""
        self.si_context = context

    def deliver(self, msg: Message, tick: int) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """A message arrives: keep it, train I on it, drop it at once if its receiver is already past it.
        Returns what I was trained on, (context, h, age), or None."""
        trained = None
        if self.hold:
            self.messages.clear()
        self.messages[msg.batch_id] = msg
        self.delivered = max(self.delivered, msg.batch_id)
        if self.newest is None or msg.batch_id >= self.newest.batch_id:
            self.newest = msg
        if self.keep_contexts:
            self.contexts[msg.batch_id] = msg.h.detach()
        if self.si is not None:
            ctx = self.si_context(msg.batch_id) if self.si_context is not None else None
            if ctx is not None:
                trained = (ctx, msg.h, tick - msg.sent)
                self.si.train_on(*trained)
            if not self.hold and msg.batch_id <= self.last_id:
                self.messages.pop(msg.batch_id, None)  # too late to be used: it only trained I
        if len(self.messages) > INBOX_LIMIT:
            raise CorporationError(
                f"agent '{self.spec.dst}' falls behind edge {self.spec.src} -> {self.spec.dst}: "
                f"{len(self.messages)} messages wait unread (limit {INBOX_LIMIT}); set 'hold: true' or "
                "'sample: true' on that edge or give the receiver a faster clock")
        return trained

    def get(self, batch_id: int) -> Message | None:
        return self.newest if self.hold else self.messages.get(batch_id)

    def ids_after(self, batch_id: int) -> list[int]:
        return [k for k in self.messages if k > batch_id]

    def advance(self, batch_id: int) -> None:
        """The receiver processed ``batch_id``: older messages are spent (a hold edge keeps its newest)."""
        self.last_id = max(self.last_id, batch_id)
        if self.hold:
            return
        for k in [k for k in self.messages if k <= batch_id]:
            del self.messages[k]

    def forget(self, below: int) -> None:
        """Contexts older than ``below`` can no longer meet a target."""
        if self.contexts:
            for k in [k for k in self.contexts if k < below]:
                del self.contexts[k]

    def detach_graphs(self) -> None:
        """Cut the autograd graph of messages still waiting on a locked edge (after their update)."""
        for k, m in self.messages.items():
            self.messages[k] = _detached(m)
        if self.newest is not None:
            self.newest = self.messages.get(self.newest.batch_id) or _detached(self.newest)


def _detached(m: Message) -> Message:
    return Message(m.batch_id, m.h.detach(), m.sent, m.start, m.end, m.reset)


class ContextInbox:
    """A task port's context (or input) per batch id, as one agent needs it (M's or I's context, or the ids
    an agent may process): posted at every emission, kept until ``forget``."""

    def __init__(self, port: str):
        self.port = port
        self.values: dict[int, torch.Tensor] = {}

    def deliver(self, item: tuple[int, torch.Tensor], tick: int) -> None:
        batch_id, value = item
        self.values[batch_id] = value

    def get(self, batch_id: int) -> torch.Tensor | None:
        return self.values.get(batch_id)

    def forget(self, below: int) -> None:
        for k in [k for k in self.values if k < below]:
            del self.values[k]
