"""Transports: what carries messages and targets between the two halves of an edge.

An edge's sender half (:class:`~corporation.outbox.Outbox`) posts items on named *channels*; the receiver
half registers a *sink* for each channel it reads. ``post(channel, item, due)`` hands an item over for
delivery at tick ``due``; ``poll(tick, kind)`` delivers every item of that kind whose tick has come, channel
by channel in registration order and, within a channel, in post order. The :class:`LocalTransport` keeps the
items in process; a distributed transport (torch.distributed P2P) posts the same items across workers.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Literal

Kind = Literal["message", "target"]


class LocalTransport:
    """In-process queues. A message due at the tick it is posted is delivered at once (latency 0: the
    receiver acts later in the same tick); everything else waits for ``poll``."""

    def __init__(self) -> None:
        self.now = 0
        self._queues: dict[tuple[Kind, str], deque[tuple[int, Any]]] = {}
        self._sinks: dict[tuple[Kind, str], Callable[[Any, int], None]] = {}

    def connect(self, kind: Kind, channel: str, sink: Callable[[Any, int], None]) -> None:
        """Register the receiver of ``channel``'s items of this kind: ``sink(item, tick)``."""
        self._queues[(kind, channel)] = deque()
        self._sinks[(kind, channel)] = sink

    def begin(self, tick: int) -> None:
        """A new tick starts: items posted for ``tick`` itself are delivered at once from now on."""
        self.now = tick

    def post(self, kind: Kind, channel: str, item: Any, due: int) -> None:
        if kind == "message" and due <= self.now:
            self._sinks[(kind, channel)](item, self.now)
        else:
            self._queues[(kind, channel)].append((due, item))

    def flush(self, tick: int) -> None:
        """End of a tick's work: nothing to exchange in process (a distributed transport sends and receives
        the tick's cross-worker items here)."""

    def close(self, tick: int) -> None:
        """The run is over (a distributed transport takes what is still in flight)."""

    def poll(self, tick: int, kind: Kind, channels: list[str] | None = None) -> None:
        """Deliver this kind's items due by ``tick`` (all channels, or ``channels`` in that order)."""
        self.now = tick
        keys = [(kind, c) for c in channels] if channels is not None else [k for k in self._queues if k[0] == kind]
        for key in keys:
            queue = self._queues[key]
            if not queue:
                continue
            sink = self._sinks[key]
            while queue and queue[0][0] <= tick:
                sink(queue.popleft()[1], tick)

    def in_flight(self) -> int:
        """Items posted and not yet delivered (for the inbox cap and tests)."""
        return sum(len(q) for q in self._queues.values())
